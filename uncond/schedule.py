"""The noise schedule under both schedulers: betas, zero terminal SNR, timestep spacing, and `NoiseSchedule`,
the base class of `uncond.scheduler`'s DDPM and DDIM (ᾱ, the forward process, the x_0 estimate, thresholding).

Notation: T = num_train_timesteps, train steps t = 0..T-1; β_t = betas[t], α_t = 1 - β_t, ᾱ_t = α_0 ··· α_t;
x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε, so the signal-to-noise ratio at t is SNR(t) = ᾱ_t / (1 - ᾱ_t).

Every function here computes in float32 with the same operations, in the same order, as diffusers 0.42, so the
schedulers built on them (`uncond/scheduler.py`) give diffusers' numbers to the last bit.
"""

import math
from types import SimpleNamespace

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin

from uncond.checks import check_choice

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def make_betas(beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """β_t for t = 0..T-1 (float32): linear (Ho et al. 2020 §4), scaled_linear, cosine (Nichol & Dhariwal eq. 17), sigmoid."""
    check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
    T = num_train_timesteps
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    if beta_schedule == "scaled_linear":  # linear in √β (Stable Diffusion's schedule)
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
    if beta_schedule == "sigmoid":  # GeoDiff's (Xu et al. 2022): β rises along a sigmoid over [-6, 6]
        return torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float32)) * (beta_end - beta_start) + beta_start

    def alpha_bar(s):  # ᾱ at time s in [0, 1], with the paper's offset 0.008 so β_1 is not tiny
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    # β capped at 0.999 so the last step does not divide by ᾱ ≈ 0.
    betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float32)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Betas whose last step is pure noise, SNR(T-1) = 0 (Lin et al. 2024, "Common Diffusion Noise Schedules and
    Sample Steps are Flawed", Algorithm 1): shift √ᾱ so its last value is 0, scale it so its first is unchanged."""
    sqrt_alpha_bar = torch.cumprod(1.0 - betas, dim=0).sqrt()  # (T,)
    first, last = sqrt_alpha_bar[0].clone(), sqrt_alpha_bar[-1].clone()
    sqrt_alpha_bar = (sqrt_alpha_bar - last) * (first / (first - last))
    alpha_bar = sqrt_alpha_bar**2
    # back from ᾱ to α_t = ᾱ_t / ᾱ_{t-1} (α_0 = ᾱ_0), and β = 1 - α; the last β is exactly 1
    alphas = torch.cat([alpha_bar[0:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


def spaced_timesteps(spacing: str, num_inference_steps: int, num_train_timesteps: int, steps_offset: int = 0) -> list:
    """The train steps visited at inference, descending; "leading"/"trailing"/"linspace" of Lin et al. 2024 Table 2."""
    check_choice("timestep_spacing", spacing, TIMESTEP_SPACINGS)
    n, T = num_inference_steps, num_train_timesteps
    if spacing == "linspace":  # numpy.linspace(0, T - 1, n).round(); round() on floats is half-to-even like numpy
        step = (T - 1) / (n - 1) if n > 1 else 0.0
        ascending = [round(i * step) for i in range(n - 1)] + [T - 1 if n > 1 else 0]
    elif spacing == "leading":  # 0, T//n, 2 T//n, ... shifted by steps_offset
        ascending = [i * (T // n) + steps_offset for i in range(n)]
    else:  # trailing: round(T - i T/n) - 1, always ends at T - 1
        # diffusers uses numpy.arange(T, 0, -T/n), which fills T + i * ((T - T/n) - T); the same float step keeps
        # the rounding equal. (For some n, e.g. 61, numpy also yields an (n+1)-th element -1; we stop at n.)
        delta = (T - T / n) - T
        return [round(T + i * delta) - 1 for i in range(n)]
    return ascending[::-1]


def check_num_inference_steps(num_inference_steps, num_train_timesteps: int) -> None:
    """A ValueError naming num_inference_steps unless it is an int in [1, T] (diffusers' message when above T)."""
    n, T = num_inference_steps, num_train_timesteps
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_inference_steps must be an int in [1, num_train_timesteps={T}]; got {n!r}")
    if n > T:
        raise ValueError(
            f"`num_inference_steps`: {n} cannot be larger than `self.config.train_timesteps`: {T} as the unet model"
            f" trained with this scheduler can only handle maximal {T} timesteps."
        )


def check_custom_timesteps(timesteps, num_train_timesteps: int) -> list:
    """A custom schedule as a list of ints, or diffusers' ValueError: strictly descending, within 0..T-1."""
    timesteps = [int(t) for t in timesteps]
    if not timesteps:
        raise ValueError("`custom_timesteps` must hold at least one timestep.")
    if any(later >= earlier for earlier, later in zip(timesteps, timesteps[1:])):
        raise ValueError("`custom_timesteps` must be in descending order.")
    if timesteps[0] >= num_train_timesteps:
        raise ValueError(f"`timesteps` must start before `self.config.train_timesteps`: {num_train_timesteps}.")
    if timesteps[-1] < 0:
        raise ValueError(f"`custom_timesteps` must be >= 0; got {timesteps[-1]}.")
    return timesteps


def dynamic_threshold(pred_original_sample: torch.Tensor, ratio: float = 0.995, max_value: float = 1.0) -> torch.Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022 §2.3): s = the `ratio` quantile of |x_0| per sample,
    clamped to [1, max_value]; x_0 -> clamp(x_0, -s, s) / s. With max_value = 1 it is clip_sample to [-1, 1]."""
    dtype = pred_original_sample.dtype
    x0 = pred_original_sample.reshape(pred_original_sample.shape[0], -1)  # (B, C*H*W)
    if dtype not in (torch.float32, torch.float64):
        x0 = x0.float()  # torch.quantile takes float32/64 only
    s = torch.quantile(x0.abs(), ratio, dim=1).clamp(min=1, max=max_value)  # (B,)
    s = s.unsqueeze(1)  # (B, 1), one threshold per sample
    return (x0.clamp(-s, s) / s).reshape(pred_original_sample.shape).to(dtype)


class NoiseSchedule(SchedulerMixin, ConfigMixin):
    """What DDPM and DDIM share: the noise schedule, the forward process, timestep lookup and the x_0 estimate."""

    order = 1  # diffusers: model evaluations per step
    _compatibles = [e.name for e in KarrasDiffusionSchedulers]  # diffusers' schedulers that read the same config

    def _setup(self):
        """Build the schedule from self.config (set by register_to_config); check every choice by name."""
        config = self.config
        check_choice("prediction_type", config.prediction_type, PREDICTION_TYPES)
        check_choice("timestep_spacing", config.timestep_spacing, TIMESTEP_SPACINGS)
        T = config.num_train_timesteps
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"num_train_timesteps must be an int >= 1; got {T!r}")
        if config.thresholding and not 0 < config.dynamic_thresholding_ratio <= 1:
            raise ValueError(f"dynamic_thresholding_ratio must be in (0, 1]; got {config.dynamic_thresholding_ratio!r}")
        if config.trained_betas is not None:  # as diffusers: taken as given, whatever num_train_timesteps says
            self.betas = torch.as_tensor(config.trained_betas, dtype=torch.float32).clone()
        else:
            self.betas = make_betas(config.beta_schedule, T, config.beta_start, config.beta_end)
        if config.rescale_betas_zero_snr:
            self.betas = rescale_zero_terminal_snr(self.betas)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.init_noise_sigma = 1.0  # x_T ~ N(0, I)
        self.num_inference_steps = None
        self.timesteps = torch.arange(T - 1, -1, -1, dtype=torch.int64)
        self._timestep_list = None  # host copy of the schedule once step() may run on it
        self._alphas_cumprod_on_device = self.alphas_cumprod  # add_noise's copy, cached on the samples' device

    @classmethod
    def _get_compatibles(cls):
        # What from_config reads configs of; ours only, so it does not import every diffusers scheduler
        from uncond.scheduler import DDIMScheduler, DDPMScheduler

        return [DDPMScheduler, DDIMScheduler]

    @property
    def compatibles(self) -> list:
        """Scheduler classes that can be built from this config: ours, then diffusers' others."""
        import diffusers
        from diffusers.utils import DummyObject

        ours = self._get_compatibles()
        names = [name for name in self._compatibles if name not in {c.__name__ for c in ours}]
        theirs = [getattr(diffusers, name) for name in names if hasattr(diffusers, name)]
        return ours + [c for c in theirs if not isinstance(c, DummyObject)]  # skip those missing an extra package

    def __len__(self):
        return self.config.num_train_timesteps

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """Identity: DDPM/DDIM feed x_t to the model unscaled (kept for diffusers' scheduler interface)."""
        return sample

    # --- forward process, for training ---

    def _sqrt_alphas(self, timesteps, like: torch.Tensor):
        """√ᾱ_t and √(1 - ᾱ_t) on `like`'s device and dtype, shaped (B,) -> (B, 1, ..., 1) to broadcast."""
        table = self._alphas_cumprod_on_device
        if table.device != like.device:
            table = self._alphas_cumprod_on_device = self.alphas_cumprod.to(like.device)
        # Gather on the samples' device: indexing a CPU table with device timesteps would wait for the device.
        alpha_bar = table.to(like.dtype)[torch.as_tensor(timesteps).to(like.device)].flatten()
        shape = (-1,) + (1,) * (like.ndim - 1)
        return (alpha_bar**0.5).reshape(shape), ((1 - alpha_bar) ** 0.5).reshape(shape)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """Sample q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I) (Ho et al. 2020 eq. 4)."""
        sqrt_a, sqrt_b = self._sqrt_alphas(timesteps, original_samples)
        return sqrt_a * original_samples + sqrt_b * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps) -> torch.Tensor:
        """The v-prediction target v = √ᾱ_t ε - √(1 - ᾱ_t) x_0 (Salimans & Ho 2022 §4)."""
        sqrt_a, sqrt_b = self._sqrt_alphas(timesteps, sample)
        return sqrt_a * noise - sqrt_b * sample

    # --- reverse process, for sampling ---

    def _spaced(self, num_inference_steps) -> list:
        """The config's spacing of `num_inference_steps` steps (Lin et al. 2024 Table 2), checked against T."""
        T = self.config.num_train_timesteps
        check_num_inference_steps(num_inference_steps, T)
        timesteps = spaced_timesteps(self.config.timestep_spacing, num_inference_steps, T, self.config.steps_offset)
        if max(timesteps) >= T:
            offset, last = self.config.steps_offset, max(timesteps)
            raise ValueError(f"steps_offset={offset} puts timestep {last} past num_train_timesteps - 1 = {T - 1}")
        return timesteps

    def _use_timesteps(self, timesteps: list, device=None):
        """Make `timesteps` the schedule and precompute every step's coefficients on the host."""
        self.timesteps = torch.tensor(timesteps, dtype=torch.int64, device=device)
        self._timestep_list = timesteps  # host copy: step() never reads self.timesteps
        self._index = {t: i for i, t in enumerate(timesteps)}
        self._coeffs = self._coefficients(timesteps)
        self._eta_cache = {}  # DDIM: σ_t(η) terms for each eta used so far
        self._step_index = 0  # where the loop is, for timesteps handed to step() as device tensors

    def _lookup(self, timestep):
        """t (a python int), its index in the schedule (None if off it) and its coefficients; reads no device memory."""
        if self._timestep_list is None:
            self._default_timesteps()
        if isinstance(timestep, torch.Tensor) and timestep.device.type != "cpu":
            # Reading a device tensor would stall the host until the device catches up, so assume the caller walks
            # self.timesteps in order (as the diffusers loop does) and take t from our host copy.
            i = self._step_index % len(self._timestep_list)
            t = self._timestep_list[i]
        else:
            t = int(timestep)
            i = self._index.get(t)
            if i is None:
                return t, None, self._coefficients_off_schedule(t)
        self._step_index = i + 1
        return t, i, self._coeffs[i]

    def _alpha_bars(self, timesteps, prev_timesteps, final_alpha_cumprod):
        """ᾱ_t and ᾱ_prev as float32 vectors; ᾱ_prev = final_alpha_cumprod where prev < 0 (past the last step)."""
        t = torch.tensor(timesteps, dtype=torch.int64)
        prev = torch.tensor(prev_timesteps, dtype=torch.int64)
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_prev = torch.where(prev >= 0, self.alphas_cumprod[prev.clamp(min=0)], final_alpha_cumprod)
        return alpha_prod_t, alpha_prod_prev

    @staticmethod
    def _rows(**columns):
        """Columns of float32 tensors -> one namespace of python floats per step (`c.sqrt_a`, ...)."""
        rows = zip(*(column.tolist() for column in columns.values()))
        return [SimpleNamespace(**dict(zip(columns, row))) for row in rows]

    def _predict_original_sample(self, model_output, sample, c):
        """x_0 from the model output: ε (Ho et al. 2020 eq. 15, DDIM eq. 12), v (Salimans & Ho 2022) or x_0 itself."""
        config = self.config
        if config.prediction_type == "epsilon":
            x0 = (sample - c.sqrt_b * model_output) / c.sqrt_a
        elif config.prediction_type == "v_prediction":
            x0 = c.sqrt_a * sample - c.sqrt_b * model_output
        else:
            x0 = model_output
        # keep x_0 in the data range; it explodes at large t where √ᾱ_t ≈ 0
        if config.thresholding:  # per sample, by a percentile of |x_0| (Saharia et al. 2022 §2.3)
            x0 = dynamic_threshold(x0, config.dynamic_thresholding_ratio, config.sample_max_value)
        elif config.clip_sample:
            x0 = x0.clamp(-config.clip_sample_range, config.clip_sample_range)
        return x0

    @staticmethod
    def _randn(like: torch.Tensor, generator, device):
        """N(0, I) noise shaped like `like`, drawn on the generator's device (as diffusers does, so seeds agree)."""
        draw_on = generator.device if generator is not None else like.device
        # CPU noise for a GPU loop is drawn into pinned memory and copied without blocking: the host never waits for the GPU
        pinned = draw_on.type == "cpu" and torch.device(device).type == "cuda"
        noise = torch.randn(like.shape, generator=generator, device=draw_on, dtype=like.dtype, pin_memory=pinned)
        return noise.to(device, non_blocking=True)
