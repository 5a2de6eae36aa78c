"""DDPM and DDIM noise schedulers that match diffusers' `DDPMScheduler` and `DDIMScheduler`.

Notation: T = num_train_timesteps, train steps t = 0..T-1; β_t = betas[t], α_t = alphas[t] = 1 - β_t,
ᾱ_t = alphas_cumprod[t] = α_0 ··· α_t; x_0 a clean sample, ε ~ N(0, I) the noise,
x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε (a noisy sample), v = √ᾱ_t ε - √(1 - ᾱ_t) x_0.

Same constructor arguments, attributes and loop as diffusers, so either library's scheduler can stand in:

    scheduler.set_timesteps(50)
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t), t, x).prev_sample

Speed: `set_timesteps` computes every per-step coefficient on the host once, so `step()` only does elementwise
arithmetic with python floats on the sample's device and never waits for the device. The coefficients are
computed with the same float32 operations, in the same order, as diffusers, which keeps the results equal.
"""

import inspect
import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
VARIANCE_TYPES = ("fixed_small", "fixed_large")

# diffusers config keys for features we do not implement: from_config refuses them unless they are off.
_UNSUPPORTED_OFF = {"trained_betas": None, "thresholding": False, "rescale_betas_zero_snr": False}


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def make_betas(beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """β_t for t = 0..T-1 (float32): linear (Ho et al. 2020 §4), scaled_linear, cosine (Nichol & Dhariwal eq. 17)."""
    _check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
    T = num_train_timesteps
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    if beta_schedule == "scaled_linear":  # linear in √β (Stable Diffusion's schedule)
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2

    def alpha_bar(s):  # ᾱ at time s in [0, 1], with the paper's offset 0.008 so β_1 is not tiny
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    # β capped at 0.999 so the last step does not divide by ᾱ ≈ 0.
    betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float32)


def spaced_timesteps(spacing: str, num_inference_steps: int, num_train_timesteps: int, steps_offset: int = 0) -> list:
    """The train steps visited at inference, descending; "leading"/"trailing"/"linspace" of Lin et al. 2023 Table 2."""
    _check_choice("timestep_spacing", spacing, TIMESTEP_SPACINGS)
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


class SchedulerConfig(dict):
    """The constructor arguments, readable as attributes (`config.num_train_timesteps`) like diffusers' FrozenDict."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class SchedulerOutput:
    prev_sample: torch.Tensor  # x_{t-1}, or x at the next (smaller) timestep
    pred_original_sample: torch.Tensor  # the model's estimate of x_0, after clipping


class _Scheduler:
    """What DDPM and DDIM share: the noise schedule, the forward process, timestep spacing and the x_0 estimate."""

    order = 1  # diffusers: model evaluations per step

    def _setup(self, args: dict):
        config = {k: v for k, v in args.items() if k != "self"}
        _check_choice("prediction_type", config["prediction_type"], PREDICTION_TYPES)
        _check_choice("timestep_spacing", config["timestep_spacing"], TIMESTEP_SPACINGS)
        T = config["num_train_timesteps"]
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"num_train_timesteps must be an int >= 1; got {T!r}")
        self.config = SchedulerConfig(config)
        self.betas = make_betas(config["beta_schedule"], T, config["beta_start"], config["beta_end"])
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.init_noise_sigma = 1.0  # x_T ~ N(0, I)
        self.num_inference_steps = None
        self.timesteps = torch.arange(T - 1, -1, -1, dtype=torch.int64)
        self._alphas_cumprod_on_device = self.alphas_cumprod  # add_noise's copy, cached on the samples' device

    @classmethod
    def from_config(cls, config, **overrides):
        """Build from a config mapping (ours or diffusers'), ignoring keys this class does not take."""
        config = {**config, **overrides}
        for key, off in _UNSUPPORTED_OFF.items():
            if config.get(key, off) != off:
                raise ValueError(f"{key}={config[key]!r} is not supported here; it must be {off!r}")
        params = inspect.signature(cls.__init__).parameters
        return cls(**{k: v for k, v in config.items() if k in params and k != "self"})

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

    def set_timesteps(self, num_inference_steps: int, device=None):
        """Choose the inference timesteps (Lin et al. 2023 Table 2) and precompute every step's coefficients."""
        T = self.config.num_train_timesteps
        n = num_inference_steps
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= T:
            raise ValueError(f"num_inference_steps must be an int in [1, num_train_timesteps={T}]; got {n!r}")
        timesteps = spaced_timesteps(self.config.timestep_spacing, n, T, self.config.steps_offset)
        if max(timesteps) >= T:
            offset, last = self.config.steps_offset, max(timesteps)
            raise ValueError(f"steps_offset={offset} puts timestep {last} past num_train_timesteps - 1 = {T - 1}")
        self.num_inference_steps = n
        self.timesteps = torch.tensor(timesteps, dtype=torch.int64, device=device)
        self._timestep_list = timesteps  # host copy: step() never reads self.timesteps
        self._index = {t: i for i, t in enumerate(timesteps)}
        self._coeffs = self._coefficients(timesteps)
        self._eta_cache = {}  # DDIM: σ_t(η) terms for each eta used so far
        self._step_index = 0  # where the loop is, for timesteps handed to step() as device tensors

    def _lookup(self, timestep):
        """t (a python int), its index in the schedule (None if off it) and its coefficients; reads no device memory."""
        if self.num_inference_steps is None:
            raise ValueError("num_inference_steps is None: call set_timesteps() before step()")
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

    def _coefficients_off_schedule(self, t):
        raise ValueError(f"timestep {t} is not in scheduler.timesteps: DDPM steps along the set_timesteps() schedule")

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
        if self.config.prediction_type == "epsilon":
            x0 = (sample - c.sqrt_b * model_output) / c.sqrt_a
        elif self.config.prediction_type == "v_prediction":
            x0 = c.sqrt_a * sample - c.sqrt_b * model_output
        else:
            x0 = model_output
        if self.config.clip_sample:  # keep x_0 in the data range; it explodes at large t where √ᾱ_t ≈ 0
            x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        return x0

    @staticmethod
    def _randn(like: torch.Tensor, generator, device):
        """N(0, I) noise shaped like `like`, drawn on the generator's device (as diffusers does, so seeds agree)."""
        draw_on = generator.device if generator is not None else like.device
        # CPU noise for a GPU loop is drawn into pinned memory and copied without blocking: the host never waits for the GPU
        pinned = draw_on.type == "cpu" and torch.device(device).type == "cuda"
        noise = torch.randn(like.shape, generator=generator, device=draw_on, dtype=like.dtype, pin_memory=pinned)
        return noise.to(device, non_blocking=True)


class DDPMScheduler(_Scheduler):
    """Ancestral sampling of Ho et al. 2020, on any subsequence of timesteps; matches diffusers' DDPMScheduler."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
    ):
        self._setup(locals())  # first line: locals() is exactly the constructor arguments here
        _check_choice("variance_type", variance_type, VARIANCE_TYPES)
        self.variance_type = variance_type

    def _coefficients(self, timesteps):
        # The step goes from t to the next listed timestep, -1 after the last one (where ᾱ = 1).
        prev = timesteps[1:] + [-1]
        alpha_prod_t, alpha_prod_prev = self._alpha_bars(timesteps, prev, torch.tensor(1.0))
        beta_prod_t, beta_prod_prev = 1 - alpha_prod_t, 1 - alpha_prod_prev
        current_alpha = alpha_prod_t / alpha_prod_prev  # α over the (possibly skipped) step
        current_beta = 1 - current_alpha
        if self.variance_type == "fixed_small":  # β̃_t, the true posterior variance (eq. 7); clamp as diffusers does
            variance = (beta_prod_prev / beta_prod_t * current_beta).clamp(min=1e-20)
        else:  # β_t, the upper bound of §3.2
            variance = current_beta
        return self._rows(
            sqrt_a=alpha_prod_t**0.5,
            sqrt_b=beta_prod_t**0.5,
            # posterior mean μ̃_t(x_t, x_0) = x0_coeff x_0 + xt_coeff x_t (Ho et al. 2020 eq. 7)
            x0_coeff=alpha_prod_prev**0.5 * current_beta / beta_prod_t,
            xt_coeff=current_alpha**0.5 * beta_prod_prev / beta_prod_t,
            std=variance**0.5,
        )

    def step(self, model_output, timestep, sample, generator=None, return_dict: bool = True):
        """One ancestral step x_t -> x_prev ~ N(μ̃_t(x_t, x_0), σ_t² I) (Ho et al. 2020 eq. 6, 7)."""
        t, _, c = self._lookup(timestep)
        pred_original_sample = self._predict_original_sample(model_output, sample, c)
        prev_sample = c.x0_coeff * pred_original_sample + c.xt_coeff * sample
        if t > 0:  # no noise on the last step to x_0; the draw count must match diffusers' for equal seeds
            prev_sample = prev_sample + c.std * self._randn(model_output, generator, sample.device)
        if not return_dict:
            return prev_sample, pred_original_sample
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)


class DDIMScheduler(_Scheduler):
    """Denoising diffusion implicit models (Song et al. 2021): eta=0 deterministic, eta=1 DDPM-like; as diffusers'."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "leading",
    ):
        self._setup(locals())  # first line: locals() is exactly the constructor arguments here
        # ᾱ used after the last step: 1 (land on x_0) or ᾱ_0 (as in the original DDIM code).
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]

    def _coefficients(self, timesteps):
        # diffusers' rule: the previous timestep is t - T // n for every spacing, not the next listed timestep.
        prev = [t - self.config.num_train_timesteps // self.num_inference_steps for t in timesteps]
        alpha_prod_t, alpha_prod_prev = self._alpha_bars(timesteps, prev, self.final_alpha_cumprod)
        beta_prod_t, beta_prod_prev = 1 - alpha_prod_t, 1 - alpha_prod_prev
        # σ_t(η=1)² = (1 - ᾱ_prev)/(1 - ᾱ_t) (1 - ᾱ_t/ᾱ_prev) (DDIM eq. 16)
        variance = (beta_prod_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_prev)
        return self._rows(
            sqrt_a=alpha_prod_t**0.5,
            sqrt_b=beta_prod_t**0.5,
            sqrt_a_prev=alpha_prod_prev**0.5,
            beta_prod_prev=beta_prod_prev,
            sqrt_variance=variance**0.5,
        )

    def _coefficients_off_schedule(self, t):
        return self._coefficients([t])[0]  # DDIM's prev rule needs no schedule lookup, so any t works

    @staticmethod
    def _noise_terms(eta, sqrt_variance, beta_prod_prev):
        """σ_t(η) = η σ_t(1) and the direction coefficient √(1 - ᾱ_prev - σ_t²), as lists of floats.

        Computed with float32 torch ops like diffusers' (torch's float32 sqrt is not always correctly rounded,
        so python's math would differ from diffusers in the last bit)."""
        std = eta * torch.tensor(sqrt_variance, dtype=torch.float32)
        direction = (torch.tensor(beta_prod_prev, dtype=torch.float32) - std**2).clamp(min=0) ** 0.5
        return std.tolist(), direction.tolist()

    def _eta_terms(self, eta, i, c):
        """(σ_t(η), direction coefficient) for step i, computed once per eta for the whole schedule."""
        if i is None:  # a timestep off the schedule
            std, direction = self._noise_terms(eta, [c.sqrt_variance], [c.beta_prod_prev])
            return std[0], direction[0]
        if eta not in self._eta_cache:
            self._eta_cache[eta] = self._noise_terms(
                eta, [c.sqrt_variance for c in self._coeffs], [c.beta_prod_prev for c in self._coeffs]
            )
        std, direction = self._eta_cache[eta]
        return std[i], direction[i]

    def step(
        self,
        model_output,
        timestep,
        sample,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator=None,
        variance_noise=None,
        return_dict: bool = True,
    ):
        """x_t -> x_prev = √ᾱ_prev x_0 + √(1 - ᾱ_prev - σ_t²) ε + σ_t z (Song et al. 2021 eq. 12, 16)."""
        _, i, c = self._lookup(timestep)
        pred_original_sample = self._predict_original_sample(model_output, sample, c)
        if use_clipped_model_output or self.config.prediction_type == "sample":
            # ε consistent with x_0 (the clipped one if asked, as GLIDE does); "sample" uses the unclipped x_0
            x0 = pred_original_sample if use_clipped_model_output else model_output
            pred_epsilon = (sample - c.sqrt_a * x0) / c.sqrt_b
        elif self.config.prediction_type == "epsilon":
            pred_epsilon = model_output
        else:  # v_prediction
            pred_epsilon = c.sqrt_a * model_output + c.sqrt_b * sample

        std, direction = self._eta_terms(eta, i, c)
        prev_sample = c.sqrt_a_prev * pred_original_sample + direction * pred_epsilon
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError("pass either generator or variance_noise, not both")
            if variance_noise is None:
                variance_noise = self._randn(model_output, generator, sample.device)
            prev_sample = prev_sample + std * variance_noise
        if not return_dict:
            return prev_sample, pred_original_sample
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
