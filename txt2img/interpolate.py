"""Interpolation between two prompts: one seed, the text embeddings mixed from the first prompt's to the second's.

    frames = list(interpolate_prompts(pipe, "red heart", "blue heart", num_frames=8, seed=0))
    save_animation([f.images[0] for f in frames], "hearts.webp")     # uncond.images

The UNet reads CLIP's per-token hidden states through cross-attention; a frame at weight w reads
(1 - w) h_a + w h_b, token by token, attending to the tokens of either prompt. The noise is the same in every frame
(one seed), so what moves is what the text asks for. The end frames use the two prompts' own embeddings, encoded
as a plain call encodes them (with the negative prompt, in one batch), so they equal the plain generations; the
negative prompt's embeddings are the nearer prompt's call's. Strips between two seeds: `uncond.explore`.
"""

from collections.abc import Iterator

from txt2img.clip import TextEmbeddings
from txt2img.default_style import image_prompts
from txt2img.pipeline import TextSampleOutput, TextToImagePipeline, check_prompts
from uncond.explore import frame_weights


def lerp_embeddings(a: TextEmbeddings, b: TextEmbeddings, weight: float) -> TextEmbeddings:
    """(1 - weight) a + weight b per token (B, L, D), attending where either attends; `a` and `b` themselves at 0 and 1."""
    if weight == 0:
        return a
    if weight == 1:
        return b
    hidden_states = (1 - weight) * a.hidden_states + weight * b.hidden_states
    truncated = [x or y for x, y in zip(a.truncated, b.truncated)]
    return TextEmbeddings(hidden_states, a.attention_mask | b.attention_mask, truncated)


def interpolate_prompts(
    pipe: TextToImagePipeline,
    prompt: str,
    other_prompt: str,
    num_frames: int,
    negative_prompt: str | None = None,
    guidance_scale: float = 5.0,
    add_style: bool = True,
    **kwargs,
) -> Iterator[TextSampleOutput]:
    """One image per frame from `prompt` to `other_prompt` with the same noise; the end frames are the plain
    generations of the two prompts (a prompt naming no style gets the first image's colour style, as a plain call
    adds it: `txt2img.default_style`). `kwargs`: the pipeline's other settings (seed, steps, scheduler, ...)."""
    weights = frame_weights(num_frames)
    for name, text in (("prompt", prompt), ("other_prompt", other_prompt)):
        if not isinstance(text, str):
            raise ValueError(f"{name} must be a string, got {text!r}")
    (first,), negatives = check_prompts(prompt, negative_prompt)
    too_long = lambda rows: pipe.text_encoder.tokenize(rows)[2]  # noqa: E731 (as the pipeline: a style that is cut is not added)
    (first, other), _ = image_prompts([first, other_prompt], 1, add_style, too_long)
    guided = guidance_scale != 1.0
    cond_a, uncond_a = pipe.encode([first], negatives, guided)
    cond_b, uncond_b = pipe.encode([other], negatives, guided)
    for weight in weights:
        label = (
            prompt if weight == 0 else other_prompt if weight == 1 else f"{prompt} -> {other_prompt} at {weight:.2f}"
        )
        yield pipe(
            prompt=label,
            negative_prompt=negative_prompt,
            guidance_scale=guidance_scale,
            prompt_embeds=lerp_embeddings(cond_a, cond_b, weight),
            negative_prompt_embeds=uncond_a if weight < 0.5 else uncond_b,
            num_images=1,
            **kwargs,
        )
