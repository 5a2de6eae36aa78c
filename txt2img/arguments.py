"""The text-to-image pipeline's arguments: prompts, given embeddings, thresholding, checked; each ValueError names
its argument (as `uncond.checks` does)."""

from txt2img.clip import TextEmbeddings
from uncond.checks import check_float


def check_prompts(prompt, negative_prompt) -> tuple[list, list]:
    """Prompts as a list of strings, and one negative prompt per prompt ("" where none was given)."""
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
    if negative_prompt is None:
        negatives = [""] * len(prompts)
    elif isinstance(negative_prompt, str):
        negatives = [negative_prompt] * len(prompts)
    elif (
        isinstance(negative_prompt, (list, tuple))
        and len(negative_prompt) == len(prompts)
        and all(isinstance(p, str) for p in negative_prompt)
    ):
        negatives = list(negative_prompt)
    else:
        raise ValueError(
            f"negative_prompt must be None, a string, or a list of {len(prompts)} strings (one per prompt), got {negative_prompt!r}"
        )
    return list(prompts), negatives


def check_embeddings(name: str, embeddings, rows: int) -> TextEmbeddings:
    """`TextEmbeddings` with one row per prompt, else a ValueError naming the argument."""
    if not isinstance(embeddings, TextEmbeddings) or embeddings.hidden_states.shape[0] != rows:
        raise ValueError(f"{name} must be TextEmbeddings with {rows} row(s), one per prompt")
    return embeddings


def repeat_embeddings(embeddings: TextEmbeddings, n: int) -> TextEmbeddings:
    """Each prompt's embeddings `n` times in a row: (P, L, D) -> (P n, L, D)."""
    return TextEmbeddings(
        embeddings.hidden_states.repeat_interleave(n, dim=0),
        embeddings.attention_mask.repeat_interleave(n, dim=0),
        [t for t in embeddings.truncated for _ in range(n)],
    )


def threshold_options(thresholding, dynamic_thresholding_ratio, sample_max_value) -> dict:
    """The scheduler settings of dynamic thresholding, checked; none when it is off (the scheduler's clipping)."""
    if not isinstance(thresholding, bool):
        raise ValueError(f"thresholding must be True or False, got {thresholding!r}")
    if not thresholding:
        return {}
    return {
        "thresholding": True,
        "dynamic_thresholding_ratio": check_float("dynamic_thresholding_ratio", dynamic_thresholding_ratio, 0.5, 1.0),
        "sample_max_value": check_float("sample_max_value", sample_max_value, 1.0, 100.0),
    }
