"""Inpainting without retraining (RePaint, Lugmayr et al. 2022): the known region pasted in at every step, with jumps.

The unconditional (or text-conditional) model fills the masked region while the rest of the picture is held to the
picture itself: after each reverse step x_t -> x_{t-1}, the known pixels are replaced by the picture noised to
x_{t-1}'s level, q(x_{t-1} | x_0) (Alg. 1, line 5). One paste per step leaves a seam, since the model never sees
the known region's content while it denoises the unknown one; RePaint's resampling fixes that by going back up the
chain, x_{t-1} -> x_{t-1+j} ~ q(x_{t-1+j} | x_{t-1}), and down again, so each region hears of the other (section 4.2).

The schedule of jumps is the one of diffusers' `RePaintScheduler.set_timesteps` (and of the RePaint code): counting
the n inference steps j = n-1 .. 0 from the clean end, at every j in range(0, n - jump_length, jump_length) the
chain jumps back `jump_length` steps `jump_n_sample - 1` times, so those stretches are denoised `jump_n_sample` times.
The paper's setting is jump_length 10, jump_n_sample 10 over 250 steps (about 2,250 model calls); the defaults here
are smaller, since each resample costs model calls on a CPU. Here the jumps are a `hook` of the one sampling loop
(`uncond.sampling.denoise`), which is handed the revisited timesteps; the steps themselves are the scheduler's own
DDPM (or DDIM) steps. One up-jump is a single draw from q(x_b | x_a) = N(sqrt(a_b/a_a) x_a, (1 - a_b/a_a) I) with a
the alpha-bars, where diffusers draws it one training step at a time; the two have the same distribution.
"""

import torch

from uncond.checks import check_int

# jumps of the paper's length, three passes over each stretch instead of ten: 130 model calls for 50 steps, not 410
DEFAULT_JUMP_LENGTH = 10
DEFAULT_JUMP_N_SAMPLE = 3
MAX_JUMPS = 100


def check_jumps(jump_length, jump_n_sample) -> tuple[int, int]:
    """jump_length (steps gone back per jump) in [1, 1000] and jump_n_sample (passes over a stretch) in [1, 100]."""
    jump_length = check_int("jump_length", jump_length, 1, 1000)
    return jump_length, check_int("jump_n_sample", jump_n_sample, 1, MAX_JUMPS)


def repaint_positions(num_steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """The order in which RePaint runs `num_steps` steps: positions 0 (noisiest) .. num_steps - 1 in the descending
    timesteps, revisited after each jump back (diffusers' `RePaintScheduler.set_timesteps` schedule, as positions)."""
    jumps = {j: jump_n_sample - 1 for j in range(0, num_steps - jump_length, jump_length)}
    order, j = [], num_steps  # j counts the steps left to the clean end, as RePaint's code does
    while j >= 1:
        j -= 1
        order.append(num_steps - 1 - j)
        if jumps.get(j, 0) > 0:
            jumps[j] -= 1
            j += jump_length  # back up: the next step is jump_length - 1 positions before this one
    return order


def randn_like(x: torch.Tensor, generator) -> torch.Tensor:
    """N(0, I) shaped like x, drawn on the CPU from `generator` (seeds mean the same noise on every device)."""
    return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)


class RePaintHook:
    """The loop's hook for inpainting: paste the known region at the step's noise level, jump back up where due.

    x_0: the picture (B, C, H, W) in [-1, 1]; mask: (1, 1, H, W), 1 where the model fills, 0 where x_0 is kept;
    run: the timesteps in the order the loop steps from them (with the revisits).
    """

    def __init__(self, scheduler, x_0: torch.Tensor, mask: torch.Tensor, run: list, generator=None):
        self.scheduler, self.x_0, self.run, self.generator = scheduler, x_0, [int(t) for t in run], generator
        self.mask = mask.to(device=x_0.device, dtype=x_0.dtype)
        self.alphas_cumprod = scheduler.alphas_cumprod.tolist()

    def alpha_bar(self, timestep: int) -> float:
        """alpha-bar at a timestep; 1 past the last step (the clean picture)."""
        return 1.0 if timestep < 0 else self.alphas_cumprod[timestep]

    def known(self, timestep: int) -> torch.Tensor:
        """The picture at `timestep`'s noise level, q(x_t | x_0) (Ho et al. 2020 eq. 4); x_0 itself at the end."""
        if timestep < 0:
            return self.x_0
        a = self.alpha_bar(timestep)
        return a**0.5 * self.x_0 + (1 - a) ** 0.5 * randn_like(self.x_0, self.generator)

    def forward(self, x: torch.Tensor, level: int, timestep: int) -> torch.Tensor:
        """x at `level` taken up to `timestep`: one draw of q(x_timestep | x_level) (RePaint eq. 8, over a jump)."""
        ratio = self.alpha_bar(timestep) / self.alpha_bar(level)
        return ratio**0.5 * x + (1 - ratio) ** 0.5 * randn_like(x, self.generator)

    def __call__(self, step: int, timestep: int, prev_sample: torch.Tensor) -> torch.Tensor:
        level = int(self.scheduler.previous_timestep(timestep))  # where the step landed (-1: the clean picture)
        x = self.mask * prev_sample + (1 - self.mask) * self.known(level)  # RePaint Alg. 1, line 7
        if step + 1 < len(self.run) and self.run[step + 1] > level:  # the schedule goes back up: resample
            x = self.forward(x, level, self.run[step + 1])
        return x


def paste(x: torch.Tensor, x_0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The final paste: the model's pixels where the mask is 1, the picture's exactly where it is 0."""
    mask = mask.to(device=x.device, dtype=torch.bool)
    return torch.where(mask, x, x_0.to(x))
