"""Classifier-free guidance (Ho & Salimans 2022) as a model function for the one sampling loop.

One network learns both the conditional model eps(x_t, t, c) and the unconditional one eps(x_t, t, "") (training
drops 10% of the captions). Sampling mixes them, eps_guided = eps_uncond + s (eps_cond - eps_uncond): s = 1 is
the conditional model, s > 1 pushes the sample further towards the prompt. `guided_model_fn` wraps the UNet so that
`uncond.sampling.denoise` sees a plain `model_fn(x_t, t)`: both halves run in one batched UNet call per step.
"""

import torch

from txt2img.clip import TextEmbeddings
from uncond.checks import check_float
from uncond.sampling import ModelFn, model_dtype

MAX_GUIDANCE_SCALE = 1000.0  # beyond this the guided output is only overflow


def classifier_free_guidance(
    cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float, guidance_rescale: float = 0.0
) -> torch.Tensor:
    """Ho & Salimans 2022 eq. 6 with s = 1 + w: uncond + s (cond - uncond); optional rescale of Lin et al. 2024."""
    guided = uncond + guidance_scale * (cond - uncond)  # (B, C, H, W)
    if guidance_rescale > 0:
        # Lin et al. 2024 eqs. 14-16: match the guided output's per-sample std to the conditional one's,
        # then blend with the plain guided output by phi = guidance_rescale (applied to the model output, as diffusers does)
        dims = tuple(range(1, cond.ndim))
        rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
        guided = guidance_rescale * rescaled + (1.0 - guidance_rescale) * guided
    return guided


def check_guidance_args(guidance_scale, guidance_rescale) -> tuple[float, float]:
    """guidance_scale >= 0 (0 unconditional, 1 no guidance, > 1 guidance); guidance_rescale in [0, 1]."""
    guidance_scale = check_float("guidance_scale", guidance_scale, 0.0, MAX_GUIDANCE_SCALE)
    return guidance_scale, check_float("guidance_rescale", guidance_rescale, 0.0, 1.0)


def guided_model_fn(
    unet,
    cond: TextEmbeddings,
    uncond: TextEmbeddings | None,
    guidance_scale: float,
    guidance_rescale: float = 0.0,
) -> ModelFn:
    """The model function of a text-conditional UNet for `cond` (B rows), guided away from `uncond` (B rows).

    guidance_scale 1 (or no `uncond`) is the conditional model alone: one pass per step.
    """
    guided = guidance_scale != 1.0
    if guided and uncond is None:
        raise ValueError("uncond embeddings are needed when guidance_scale != 1")
    device, dtype = next(unet.parameters()).device, model_dtype(unet, torch.float32)
    if guided:
        # one batch of 2B: the B unconditional (or negative) rows first, then the B conditional rows
        hidden_states = torch.cat([uncond.hidden_states, cond.hidden_states]).to(
            device=device, dtype=dtype
        )  # (2B, L, D)
        attention_mask = torch.cat([uncond.attention_mask, cond.attention_mask]).to(device)  # (2B, L)
    else:
        hidden_states = cond.hidden_states.to(device=device, dtype=dtype)  # (B, L, D)
        attention_mask = cond.attention_mask.to(device)  # (B, L)

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # the UNet runs in its dtype; x_t, the guidance and the scheduler in x_t's (float32 from the pipeline)
        model_input = x_t.to(dtype)
        if not guided:
            return unet(model_input, t, hidden_states, attention_mask).to(x_t.dtype)
        model_output = unet(torch.cat([model_input, model_input]), t, hidden_states, attention_mask).to(x_t.dtype)
        out_uncond, out_cond = model_output.chunk(2)  # (B, C, H, W) each
        return classifier_free_guidance(out_cond, out_uncond, guidance_scale, guidance_rescale)

    return model_fn
