"""A comparison grid as one labelled picture: sampler names down the left, step counts along the top, each cell's
time under its picture; cells not done yet stay grey, so the picture can be shown while the grid fills.

    picture = grid_picture(["DDPM", "Euler"], [5, 10], cells)   # cells[r][c]: a SampleOutput or None
    picture.crop(cell_box(r, c, size=32))                      # exactly cell (r, c)'s first image, enlarged CELL_SCALE times
"""

from PIL import Image, ImageDraw, ImageFont

CELL_SCALE = 2  # each 32 px image drawn at 64 px (nearest: crisp pixels)
LABEL_WIDTH = 96  # the sampler names' column
HEADER_HEIGHT = 18  # the step counts' row
TIME_HEIGHT = 14  # under each cell: the seconds it took
GAP = 4  # between cells
PENDING = (224, 224, 224)


def cell_box(r: int, c: int, size: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of cell (r, c)'s picture for images of `size` px."""
    side = size * CELL_SCALE
    left = LABEL_WIDTH + c * (side + GAP)
    top = HEADER_HEIGHT + r * (side + TIME_HEIGHT + GAP)
    return left, top, left + side, top + side


def grid_picture(row_labels: list[str], steps: list[int], cells: list[list], size: int | None = None) -> Image.Image:
    """The grid so far: `cells[r][c]` is a SampleOutput (its first image, its `elapsed` seconds) or None (pending)."""
    done = [cell for row in cells for cell in row if cell is not None]
    size = size or (done[0].images[0].width if done else 32)
    right, bottom = cell_box(len(row_labels) - 1, len(steps) - 1, size)[2:]
    picture = Image.new("RGB", (right + GAP, bottom + TIME_HEIGHT + GAP), "white")
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    for c, n in enumerate(steps):
        left, top, _, _ = cell_box(0, c, size)
        draw.text((left + 2, 3), f"{n} steps", fill="black", font=font)
    for r, label in enumerate(row_labels):
        left, top, right, bottom = cell_box(r, 0, size)
        draw.text((4, top + (bottom - top) // 2 - 6), label, fill="black", font=font)
        for c in range(len(steps)):
            left, top, right, bottom = cell_box(r, c, size)
            cell = cells[r][c]
            if cell is None:
                draw.rectangle((left, top, right - 1, bottom - 1), fill=PENDING)
                continue
            image = cell.images[0].convert("RGB").resize((right - left, bottom - top), Image.Resampling.NEAREST)
            picture.paste(image, (left, top))
            draw.text((left + 2, bottom + 1), f"{cell.elapsed:.2f} s", fill=(80, 80, 80), font=font)
    return picture
