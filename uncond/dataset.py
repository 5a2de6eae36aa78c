"""The in-memory training data set: images of an imagefolder (or a hub dataset) as one uint8 tensor.

`ImageCaptionDataset` reads every `metadata.jsonl` under a folder (the layout `python -m uncond.data build-emoji`
writes, and Hugging Face's `imagefolder`) into uint8 (N, C, H, W) and serves pixels in [-1, 1]. Beside the
primary caption of each image (`captions`, the CLDR name) it keeps all its training captions (`caption_lists`),
its `styles`, `emojis`, English CLDR `keyword_lists` and `short_name_lists`, for the splits in `uncond.splits`.
"""

import collections
import copy
import json
import math
import os
from pathlib import Path

import torch
from PIL import Image, ImageOps

from uncond.captions import GROUP_MEMBERS, HAIR, SKIN_TONES

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
VARIANT_WORDS = set(SKIN_TONES) | set(HAIR) | GROUP_MEMBERS  # qualifiers that make a variant of the same emoji


def variant_base(caption: str) -> str:
    """The emoji a caption is a variant of: "waving hand: medium skin tone" -> "waving hand"; "flag: Japan" stays."""
    base, _, qualifiers = caption.partition(": ")
    if qualifiers and all(word in VARIANT_WORDS for word in qualifiers.split(", ")):
        return base
    return caption


def repeat_factors(captions: list[str]) -> list[int]:
    """Repeat factor sampling (Gupta et al. 2019, LVIS, section 4): each item is repeated round(sqrt(n_max / n)) times
    per epoch, n being the size of its variant group (`variant_base`) and n_max the largest group's.

    The emoji set is long-tailed the other way round from what people type: 104 "kiss" and "couple with heart"
    variants, but one "pizza". Square-root repeats give the single emoji about 1.6x the share of training they
    have in a plain epoch while the skin-tone variants keep most of theirs.
    """
    bases = [variant_base(caption) for caption in captions]
    sizes = collections.Counter(bases)
    n_max = max(sizes.values(), default=1)
    return [max(1, round(math.sqrt(n_max / sizes[base]))) for base in bases]


def _to_uint8(image: Image.Image, image_size: int | None, mode: str) -> torch.Tensor:
    """PIL image → uint8 (C, H, W): transparency onto white, centre-cropped and resized if asked."""
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    image = image.convert(mode)
    if image_size is not None and image.size != (image_size, image_size):
        image = ImageOps.fit(image, (image_size, image_size), Image.Resampling.LANCZOS)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(image.height, image.width, len(mode)).permute(2, 0, 1)  # (C, H, W)


def read_metadata(folder) -> tuple[list[Path], list[dict]]:
    """Image paths and metadata rows (with `text` and `captions` filled in) of every metadata.jsonl under `folder`;
    all images with empty captions when there is none."""
    folder = Path(folder)
    metas = sorted(folder.rglob("metadata.jsonl"))
    if not metas:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        return files, [{"text": "", "captions": [""]} for _ in files]
    files, rows = [], []
    for meta in metas:
        for line in meta.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            # Caption: "text", else the first other string column, as imagefolder users name it freely.
            text = row.get("text", next((v for k, v in row.items() if k != "file_name" and isinstance(v, str)), ""))
            row["text"] = text
            row["captions"] = list(row.get("captions") or [text])
            files.append(meta.parent / row["file_name"])
            rows.append(row)
    return files, rows


def read_caption_lists(folder) -> list:
    """Every image's caption list, read from the metadata alone (no pixels): e.g. `all_captions(...)` of it for
    the tokenizer."""
    return [row["captions"] for row in read_metadata(folder)[1]]


class ImageCaptionDataset(torch.utils.data.Dataset):
    """Images and captions held in memory as uint8 (N, C, H, W); items are pixels in [-1, 1].

    `captions[i]` is image i's primary caption, `caption_lists[i]` all its training captions (the primary one
    first), `styles[i]` / `emojis[i]` its style and emoji ("" where the folder does not say), `keyword_lists[i]`
    its English CLDR keywords ("driving", "vehicle") and `short_name_lists[i]` its short names ("car", "red car").
    """

    def __init__(self, path_or_name: str, image_size: int | None = None, channels: int = 3):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
            raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
        mode = "RGB" if channels == 3 else "L"
        if os.path.isdir(path_or_name):
            files, rows = read_metadata(path_or_name)
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise ValueError(f"path_or_name {path_or_name!r}: metadata names missing files, e.g. {missing[:3]}")
            images = []
            for f in files:
                with Image.open(f) as image:
                    images.append(_to_uint8(image, image_size, mode))
        else:
            pil_images, captions = _load_hub(path_or_name)
            rows = [{"text": c, "captions": [c]} for c in captions]
            images = [_to_uint8(image, image_size, mode) for image in pil_images]
        if not images:
            raise ValueError(f"path_or_name {path_or_name!r} holds no images")
        sizes = {tuple(x.shape) for x in images}
        if len(sizes) > 1:
            raise ValueError(f"images differ in size {sorted(sizes)[:3]}...; pass image_size to resize them")
        self.images = torch.stack(images)  # (N, C, H, W) uint8
        self.captions = [row["text"] for row in rows]
        self.caption_lists = [row["captions"] for row in rows]
        self.styles = [row.get("style", "") for row in rows]
        self.emojis = [row.get("emoji", "") for row in rows]
        self.keyword_lists = [list(row.get("keywords", ())) for row in rows]
        self.short_name_lists = [list(row.get("short_names", ())) for row in rows]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices, caption_lists=None) -> "ImageCaptionDataset":
        """A view of the items at `indices` (the original is untouched), with new `caption_lists` if given."""
        keep = list(indices)
        view = copy.copy(self)
        view.images = self.images[keep]
        for name in ("captions", "caption_lists", "styles", "emojis", "keyword_lists", "short_name_lists"):
            setattr(view, name, [getattr(self, name)[i] for i in keep])
        if caption_lists is not None:
            if len(caption_lists) != len(keep) or not all(caption_lists):
                raise ValueError("caption_lists must hold one non-empty list per kept item")
            view.caption_lists = [list(c) for c in caption_lists]
        return view

    def without(self, captions) -> "ImageCaptionDataset":
        """A view of this data set without the items whose caption is in `captions` (e.g. a held-out split)."""
        drop = set(captions)
        return self.subset(i for i, caption in enumerate(self.captions) if caption not in drop)

    def __getitem__(self, i: int) -> dict:
        x = self.images[i].float() / 127.5 - 1.0  # (C, H, W) in [-1, 1]; training flips (seeded) in its batches
        return {"pixel_values": x, "text": self.captions[i], "index": i}


def _load_hub(name: str) -> tuple[list[Image.Image], list[str]]:
    """PIL images and captions of a Hugging Face dataset's train split."""
    try:
        import datasets  # optional: only hub names need it
    except ImportError as err:
        raise ValueError(
            f"path_or_name {name!r} is not a folder, and `datasets` is not installed to load it from the hub"
        ) from err
    try:
        ds = datasets.load_dataset(name, split="train")
    except Exception as err:  # noqa: BLE001 - any loading failure means the same to the caller
        raise ValueError(f"path_or_name {name!r} is neither an existing folder nor a loadable dataset: {err}") from err
    image_col = (
        "image"
        if "image" in ds.column_names
        else next((k for k, f in ds.features.items() if isinstance(f, datasets.Image)), None)
    )
    if image_col is None:
        raise ValueError(f"path_or_name {name!r}: no image column in {ds.column_names}")
    text_col = (
        "text"
        if "text" in ds.column_names
        else next((k for k, f in ds.features.items() if getattr(f, "dtype", None) == "string"), None)
    )
    captions = [str(t) for t in ds[text_col]] if text_col else [""] * len(ds)
    return list(ds[image_col]), captions
