"""The text-to-image model's learning curve: score against CPU core-hours, one line per run (README, "Learning curve").

    python assets/eval/curve/make_curve.py   # reads curve.json beside this file, writes curve.png

`curve.json` holds one entry per measured model: the run it belongs to, its steps on the multi-style data, the
core-hours spent on them (wall minutes x cores, from the model card), and the top-5 shares of
`python -m evaluation natural` by the pixel judge (the nearest real picture, which is no model) and by CLIP.
"""

import json
import os

from matplotlib.figure import Figure

HERE = os.path.dirname(os.path.abspath(__file__))


def plot(points: list, path: str, reduced: list = ()) -> None:
    """Exact names and natural prompts (pixel judge, solid; CLIP, dashed) against core-hours; `reduced` points (the
    ablation's smaller evaluation, another scale) as squares, exact names by pixels only."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    axes = figure.subplots()
    for key, colour in (("exact", "tab:blue"), ("natural", "tab:orange")):
        for judge, style in (("pixels", "-"), ("clip", "--")):
            xs = [p["core_hours"] for p in points]
            ys = [100 * p[f"{key}_{judge}"] for p in points]
            axes.plot(
                xs,
                ys,
                style,
                color=colour,
                marker="o",
                label=f"{key} names, {judge}".replace("natural names", "natural prompts"),
            )
    for p in points:
        axes.annotate(
            f"{p['steps']:,}",
            (p["core_hours"], 100 * p["exact_pixels"]),
            fontsize=7,
            xytext=(3, -10),
            textcoords="offset points",
        )
    if reduced:
        xs, ys = [p["core_hours"] for p in reduced], [100 * p["exact_pixels"] for p in reduced]
        axes.plot(xs, ys, ":", color="tab:green", marker="s", label="exact names, pixels (ablation's evaluation)")
    axes.set(
        xlabel="CPU core-hours on the multi-style data",
        ylabel="top 5 (%)",
        title="text to image: score against CPU time (labels: steps)",
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    figure.savefig(path, dpi=110)


def main() -> None:
    with open(os.path.join(HERE, "curve.json"), encoding="utf-8") as f:
        curve = json.load(f)
    plot(curve["points"], os.path.join(HERE, "curve.png"), curve.get("reduced_points", []))


if __name__ == "__main__":
    main()
