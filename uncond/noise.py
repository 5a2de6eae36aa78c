"""Starting noise between two seeds: variations (AUTOMATIC1111's "variation seed") and seed interpolation.

    x_T, generator = starting_noise((4, 3, 32, 32), seed=0, device="cpu", variation_seed=7, variation_strength=0.2)

x_T is the spherical interpolation (slerp, Shoemake 1985) of the two seeds' noises, as AUTOMATIC1111's subseeds do:
a straight line between two Gaussian draws passes through vectors of too small a norm (at the middle, about 1/sqrt(2)
of a draw's), which the model reads as less noise and answers with blurred, grey pictures; the arc keeps the norm.
Strength 0 is the base seed's noise exactly, 1 the variation seed's exactly.

The per-step noise of the stochastic samplers (DDPM, DDIM with eta > 0) comes from the generator of the nearer seed
(the base seed's below strength 0.5, the variation seed's from 0.5 on), so both ends are exactly the plain generations
of their seeds. Between them those samplers jump once, at 0.5; the deterministic ones (DDIM eta 0, DPM-Solver++,
Euler) change smoothly, which is what variations and interpolation strips are for.
"""

import torch

from uncond.checks import MAX_SEED, check_float, check_int
from uncond.sampling import initial_noise

# |cos| above this: the two noises are (anti)parallel and sin(omega) ~ 0, so slerp falls back to a straight line
PARALLEL = 0.9995


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from `low` (t = 0) to `high` (t = 1), per sample (dim 0), over the other dims.

    x = sin((1 - t) omega) / sin(omega) low + sin(t omega) / sin(omega) high, omega the angle between the two samples.
    """
    if t == 0:
        return low.clone()
    if t == 1:
        return high.clone()
    wide = torch.promote_types(low.dtype, torch.float32)  # float32 at least; float64 stays float64
    flat_low, flat_high = low.reshape(low.shape[0], -1).to(wide), high.reshape(high.shape[0], -1).to(wide)  # (B, N)
    cos = (flat_low / flat_low.norm(dim=1, keepdim=True) * flat_high / flat_high.norm(dim=1, keepdim=True)).sum(1)
    omega = cos.clamp(-1, 1).acos()  # (B,)
    sin = omega.sin()
    near = cos.abs() > PARALLEL
    safe = torch.where(near, torch.ones_like(sin), sin)
    w_low = torch.where(near, torch.full_like(sin, 1 - t), ((1 - t) * omega).sin() / safe)
    w_high = torch.where(near, torch.full_like(sin, t), (t * omega).sin() / safe)
    shape = (-1,) + (1,) * (low.ndim - 1)
    return (w_low.reshape(shape) * low.to(wide) + w_high.reshape(shape) * high.to(wide)).to(low.dtype)


def check_variation(variation_seed, variation_strength) -> tuple[int | None, float]:
    """A variation seed (None: no variation) and a strength in [0, 1], else a ValueError naming the argument."""
    variation_strength = check_float("variation_strength", variation_strength, 0.0, 1.0)
    if variation_seed is None:
        return None, variation_strength
    return check_int("variation_seed", variation_seed, 0, MAX_SEED), variation_strength


def starting_noise(
    shape: tuple,
    seed: int,
    device,
    variation_seed: int | None = None,
    variation_strength: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Generator]:
    """x_T for `seed`, moved `variation_strength` of the way (on the sphere) towards `variation_seed`'s x_T,
    and the generator of the nearer seed for the per-step noise. Without a variation seed: `initial_noise`."""
    x_t, generator = initial_noise(shape, seed, "cpu", dtype)
    if variation_seed is not None and variation_strength > 0:
        other, other_generator = initial_noise(shape, variation_seed, "cpu", dtype)
        x_t = slerp(variation_strength, x_t, other)
        generator = other_generator if variation_strength >= 0.5 else generator
    pinned = torch.device(device).type == "cuda"
    return (x_t.pin_memory() if pinned else x_t).to(device, non_blocking=True), generator
