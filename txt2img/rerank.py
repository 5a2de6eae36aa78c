"""Best of N: each image drawn as N candidates in one batch, and the one the project's CLIP ranks closest to its
prompt kept (DALL-E's reranking, Ramesh et al. 2021, section 2.5).

The batch is candidate-major: row c * B + b is candidate c of image b (B = prompts x images, prompt-major). The
starting noise is drawn row by row from the seed (`uncond.sampling.initial_noise`), so the first B rows are the
images N = 1 gives, and the first k * B rows the candidates of N = k: one draw of 16 serves N = 1, 2, 4, 8, 16.
Each image is chosen among its own candidates only, so the kept images differ as much as the N = 1 ones do.

The CLIP that ranks is also the CLIP judge of `python -m evaluation natural`; the pixel judge is the one to trust
for the gain (a ranker can raise its own score without the picture getting better: Ma et al. 2025's "verifier hacking").
"""

import os
from dataclasses import replace

import torch

from txt2img.clip import CLIPEmbedder, TextEmbeddings
from uncond.checks import check_int

MAX_CANDIDATES = 16
DEFAULT_CANDIDATES = 1  # the app's and the command's N: no pixel-judge gain, 4x the time at N = 4 (README)


def check_num_candidates(num_candidates) -> int:
    """An int in [1, MAX_CANDIDATES], else a ValueError naming num_candidates."""
    return check_int("num_candidates", num_candidates, 1, MAX_CANDIDATES)


def per_candidate(embeddings: TextEmbeddings, num_candidates: int) -> TextEmbeddings:
    """The images' embeddings once per candidate, candidate-major: (B, L, D) -> (N B, L, D)."""
    return TextEmbeddings(
        embeddings.hidden_states.repeat(num_candidates, 1, 1),
        embeddings.attention_mask.repeat(num_candidates, 1),
        list(embeddings.truncated) * num_candidates,
    )


def load_ranker(location: str, device) -> CLIPEmbedder:
    """The CLIP that ranks candidates: both towers of the text encoder's CLIP folder; a ValueError if it has no image tower."""
    config = os.path.join(location, "config.json")
    if os.path.isfile(config):
        with open(config, encoding="utf-8") as f:
            if "vision_config" not in f.read():
                raise ValueError(
                    f"num_candidates > 1 needs a CLIP with an image tower to rank with; {location!r} has a text tower only"
                )
    return CLIPEmbedder.from_pretrained(location, device=device)


@torch.inference_mode()
def candidate_scores(ranker: CLIPEmbedder, x_0: torch.Tensor, prompts: list, num_candidates: int) -> torch.Tensor:
    """Cosine of each candidate to its image's prompt, (B, N): x_0 (N B, C, H, W) in [-1, 1], candidate-major;
    `prompts` one per image (B)."""
    b = len(prompts)
    if x_0.shape[0] != num_candidates * b:
        raise ValueError(f"x_0 must hold {num_candidates} x {b} candidates, got {x_0.shape[0]}")
    distinct = list(dict.fromkeys(prompts))
    text = ranker.text_features(distinct)  # (distinct prompts, P)
    text = text[[distinct.index(p) for p in prompts]]  # (B, P)
    images = x_0.float().clamp(-1, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    image = ranker.image_features(images).view(num_candidates, b, -1)  # (N, B, P)
    return (image * text).sum(-1).T.cpu()  # (B, N)


def best_of(x_0: torch.Tensor, scores: torch.Tensor, num_candidates: int | None = None) -> torch.Tensor:
    """Each image's best candidate among its first `num_candidates` (all by default): x_0 (N B, ...) -> (B, ...)."""
    b, n = scores.shape
    k = n if num_candidates is None else num_candidates
    if not 1 <= k <= n:
        raise ValueError(f"num_candidates must be in [1, {n}], got {num_candidates!r}")
    choice = scores[:, :k].argmax(dim=1)  # (B,) the winning candidate of each image
    return x_0.view(n, b, *x_0.shape[1:])[choice.to(x_0.device), torch.arange(b, device=x_0.device)]


def first_rows(stream, rows: int):
    """A sampling stream whose steps show only the first `rows` images (each image's first candidate); returns
    what the stream returns, and closing it closes the stream."""
    try:
        while True:
            try:
                step = next(stream)
            except StopIteration as done:
                return done.value
            yield replace(step, x_t=step.x_t[:rows], pred_original_sample=step.pred_original_sample[:rows])
    finally:
        stream.close()
