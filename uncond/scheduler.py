"""DDPM and DDIM noise schedulers: drop-ins for diffusers' `DDPMScheduler` and `DDIMScheduler` (0.42).

Notation: T = num_train_timesteps, train steps t = 0..T-1; β_t = betas[t], α_t = alphas[t] = 1 - β_t,
ᾱ_t = alphas_cumprod[t] = α_0 ··· α_t; x_0 a clean sample, ε ~ N(0, I) the noise,
x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε (a noisy sample), v = √ᾱ_t ε - √(1 - ᾱ_t) x_0.

Same constructor arguments (names, order, defaults), attributes, methods and loop as diffusers, so code written for
either library's scheduler runs on the other with the same numbers:

    scheduler = DDIMScheduler.from_pretrained("weights/txt2img")  # or DDIMScheduler(**config), .from_config(config)
    scheduler.set_timesteps(50)
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t), t, x).prev_sample

The math (betas, ᾱ, the posterior, the DDIM update, thresholding) is written out here and in `uncond/schedule.py`.
The plumbing is diffusers': `ConfigMixin` + `register_to_config` give the config (attribute and key access,
`from_config`, `save_config`), `SchedulerMixin` gives `save_pretrained` / `from_pretrained` of a folder, and
`BaseOutput` the step output (attribute, index and key access). A well-kept library does that better than a copy,
and it makes the saved `scheduler_config.json` files interchangeable with diffusers' byte for byte.

Speed: `set_timesteps` computes every per-step coefficient on the host once, so `step()` only does elementwise
arithmetic with python floats on the sample's device and never waits for the device. The coefficients are
computed with the same float32 operations, in the same order, as diffusers, which keeps the results equal.

Deliberate differences from diffusers 0.42: invalid option values raise a ValueError naming the argument at
construction (diffusers accepts e.g. variance_type="other"); "fixed_large_log" steps with σ_t = exp(½ log β_t)
(diffusers takes √(log β_t), which is NaN); "trailing" spacing never adds diffusers' stray t = -1 (e.g. at n = 61);
DDIM's direction coefficient √(1 - ᾱ_prev - σ_t²) is clamped at 0 (at zero terminal SNR with eta = 1 the radicand
is 0 up to rounding: where it rounds below 0 diffusers returns NaN; where above, both keep the square root of the
rounding error); DDIM takes no custom timesteps, as diffusers' does not.
"""

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput

from uncond.checks import check_choice
from uncond.schedule import NoiseSchedule, check_custom_timesteps

VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")


@dataclass
class SchedulerOutput(BaseOutput):
    """What `step` returns: `out.prev_sample`, `out[0]`, `out["prev_sample"]`, as diffusers' outputs."""

    prev_sample: torch.Tensor  # x_{t-1}, or x at the next (smaller) timestep
    pred_original_sample: torch.Tensor | None = None  # the model's estimate of x_0, after clipping/thresholding


class DDPMSchedulerOutput(SchedulerOutput):
    """diffusers' name for DDPM's step output."""


class DDIMSchedulerOutput(SchedulerOutput):
    """diffusers' name for DDIM's step output."""


class DDPMScheduler(NoiseSchedule):
    """Ancestral sampling of Ho et al. 2020, on any subsequence of timesteps; matches diffusers' DDPMScheduler."""

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas=None,  # a sequence of T betas, used as given
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,  # dynamic thresholding of x_0 instead of clip_sample (Saharia et al. 2022)
        dynamic_thresholding_ratio: float = 0.995,  # the percentile of |x_0| taken as the threshold s
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,  # the largest s; 1 makes thresholding plain clipping to [-1, 1]
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,  # SNR(T-1) = 0 (Lin et al. 2024); wants v_prediction
    ):
        check_choice("variance_type", variance_type, VARIANCE_TYPES)
        self._setup()
        self.one = torch.tensor(1.0)  # ᾱ after the last step: land on x_0
        self.variance_type = variance_type
        self.custom_timesteps = False

    def set_timesteps(self, num_inference_steps: int | None = None, device=None, timesteps: list | None = None):
        """Space `num_inference_steps` steps by the config's timestep_spacing, or take a custom descending list."""
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("Can only pass one of `num_inference_steps` or `custom_timesteps`.")
        if timesteps is not None:
            timesteps = check_custom_timesteps(timesteps, self.config.num_train_timesteps)
            self.custom_timesteps = True  # num_inference_steps stays as it was, as in diffusers
        else:
            timesteps = self._spaced(num_inference_steps)
            self.num_inference_steps = num_inference_steps
            self.custom_timesteps = False
        self._use_timesteps(timesteps, device)

    def _default_timesteps(self):
        # diffusers: without set_timesteps, DDPM steps over every training timestep, t -> t - 1
        T = self.config.num_train_timesteps
        if len(self.alphas_cumprod) != T:
            raise ValueError(f"trained_betas holds {len(self.alphas_cumprod)} betas, num_train_timesteps is {T}")
        self._use_timesteps(list(range(T - 1, -1, -1)))  # only ever before set_timesteps, so on the CPU

    def previous_timestep(self, timestep):
        """The timestep a step from `timestep` lands on: the next one in the schedule, -1 after the last."""
        if not (self.custom_timesteps or self.num_inference_steps):
            return timestep - 1
        i = self._index.get(int(timestep))
        if i is None:
            self._coefficients_off_schedule(int(timestep))
        return torch.tensor(self._timestep_list[i + 1] if i + 1 < len(self._timestep_list) else -1)

    def _coefficients_off_schedule(self, t):
        raise ValueError(f"timestep {t} is not in scheduler.timesteps: DDPM steps along the set_timesteps() schedule")

    def _variances(self, alpha_prod_t, alpha_prod_prev):
        """The posterior variance β̃_t (Ho et al. 2020 eq. 7), clamped as diffusers does, and β_t over the step."""
        current_beta = 1 - alpha_prod_t / alpha_prod_prev  # β over the (possibly skipped) step
        posterior_variance = ((1 - alpha_prod_prev) / (1 - alpha_prod_t) * current_beta).clamp(min=1e-20)
        return posterior_variance, current_beta

    def _coefficients(self, timesteps):
        prev = timesteps[1:] + [-1]  # the step goes to the next listed timestep; -1 after the last (ᾱ = 1)
        alpha_prod_t, alpha_prod_prev = self._alpha_bars(timesteps, prev, self.one)
        beta_prod_t, beta_prod_prev = 1 - alpha_prod_t, 1 - alpha_prod_prev
        current_alpha = alpha_prod_t / alpha_prod_prev
        variance, current_beta = self._variances(alpha_prod_t, alpha_prod_prev)
        columns = dict(
            sqrt_a=alpha_prod_t**0.5,
            sqrt_b=beta_prod_t**0.5,
            # posterior mean μ̃_t(x_t, x_0) = x0_coeff x_0 + xt_coeff x_t (Ho et al. 2020 eq. 7)
            x0_coeff=alpha_prod_prev**0.5 * current_beta / beta_prod_t,
            xt_coeff=current_alpha**0.5 * beta_prod_prev / beta_prod_t,
        )
        kind = self.variance_type
        if kind == "fixed_small":  # σ_t² = β̃_t, the true posterior variance
            columns["std"] = variance**0.5
        elif kind == "fixed_small_log":  # the same, through its log, as improved-diffusion stores it
            columns["std"] = torch.exp(0.5 * torch.log(variance))
        elif kind == "fixed_large":  # σ_t² = β_t, the upper bound of Ho et al. §3.2
            columns["std"] = current_beta**0.5
        elif kind == "fixed_large_log":
            columns["std"] = torch.exp(0.5 * torch.log(current_beta))
        else:  # learned_range interpolates between the two log variances; learned needs neither
            columns.update(min_log=torch.log(variance), max_log=torch.log(current_beta))
        return self._rows(**columns)

    def _std(self, c, predicted_variance):
        """σ_t of the step: fixed, or from the model's extra channels (Nichol & Dhariwal 2021 eq. 15)."""
        if self.variance_type not in ("learned", "learned_range"):
            return c.std
        if predicted_variance is None:
            raise ValueError(
                f"variance_type={self.variance_type!r} needs a model_output with twice the sample's channels"
                " (the second half predicts the variance)"
            )
        if self.variance_type == "learned":  # diffusers' reading: the extra channels are σ_t² itself
            return predicted_variance**0.5
        frac = (predicted_variance + 1) / 2  # v in [-1, 1] -> [0, 1]: log σ_t² = v log β_t + (1 - v) log β̃_t
        return torch.exp(0.5 * (frac * c.max_log + (1 - frac) * c.min_log))

    def _get_variance(self, t, predicted_variance=None, variance_type=None):
        """diffusers' private helper (its tests call it): β̃_t (fixed_small), β_t (fixed_large), as 0-dim tensors;
        for the other types what diffusers returns (σ_t, log β_t, the model's σ_t², the interpolated log σ_t²)."""
        alpha_prod_t, alpha_prod_prev = self._alpha_bars([int(t)], [int(self.previous_timestep(t))], self.one)
        variance, current_beta = (v[0] for v in self._variances(alpha_prod_t, alpha_prod_prev))
        kind = variance_type or self.config.variance_type
        if kind == "learned":
            return predicted_variance
        if kind == "learned_range":
            frac = (predicted_variance + 1) / 2
            return frac * torch.log(current_beta) + (1 - frac) * torch.log(variance)
        return {
            "fixed_small": variance,
            "fixed_small_log": torch.exp(0.5 * torch.log(variance)),
            "fixed_large": current_beta,
            "fixed_large_log": torch.log(current_beta),
        }[kind]

    def step(self, model_output, timestep, sample, generator=None, return_dict: bool = True):
        """One ancestral step x_t -> x_prev ~ N(μ̃_t(x_t, x_0), σ_t² I) (Ho et al. 2020 eq. 6-7; eq. 11 for ε)."""
        t, _, c = self._lookup(timestep)
        predicted_variance = None
        if self.variance_type in ("learned", "learned_range") and model_output.shape[1] == sample.shape[1] * 2:
            model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)  # (B, C, ...) each
        pred_original_sample = self._predict_original_sample(model_output, sample, c)
        prev_sample = c.x0_coeff * pred_original_sample + c.xt_coeff * sample
        if t > 0:  # no noise on the last step to x_0; the draw count must match diffusers' for equal seeds
            noise = self._randn(model_output, generator, sample.device)
            prev_sample = prev_sample + self._std(c, predicted_variance) * noise
        if not return_dict:
            return prev_sample, pred_original_sample
        return DDPMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)


class DDIMScheduler(NoiseSchedule):
    """Denoising diffusion implicit models (Song et al. 2021): eta=0 deterministic, eta=1 DDPM-like; as diffusers'."""

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas=None,  # a sequence of T betas, used as given
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,  # dynamic thresholding of x_0 instead of clip_sample (Saharia et al. 2022)
        dynamic_thresholding_ratio: float = 0.995,  # the percentile of |x_0| taken as the threshold s
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,  # the largest s; 1 makes thresholding plain clipping to [-1, 1]
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,  # SNR(T-1) = 0 (Lin et al. 2024); wants v_prediction
    ):
        self._setup()
        # ᾱ used after the last step: 1 (land on x_0) or ᾱ_0 (as in the original DDIM code).
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]

    def set_timesteps(self, num_inference_steps: int, device=None):
        """Space `num_inference_steps` steps by the config's timestep_spacing (DDIM takes no custom list, as diffusers)."""
        timesteps = self._spaced(num_inference_steps)
        self.num_inference_steps = num_inference_steps
        self._use_timesteps(timesteps, device)

    def _default_timesteps(self):
        raise ValueError(
            "Number of inference steps is 'None', you need to run 'set_timesteps' after creating the scheduler"
        )

    def previous_timestep(self, timestep):
        """diffusers' rule for every spacing: t - T // n, not the next listed timestep."""
        if self.num_inference_steps is None:
            self._default_timesteps()  # raises: DDIM has no schedule before set_timesteps
        return timestep - self.config.num_train_timesteps // self.num_inference_steps

    def _coefficients(self, timesteps):
        prev = [self.previous_timestep(t) for t in timesteps]
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

    def _get_variance(self, timestep, prev_timestep):
        """σ_t(η=1)² between two timesteps (DDIM eq. 16), a 0-dim tensor: diffusers' private helper, its tests call it."""
        alpha_prod_t, alpha_prod_prev = self._alpha_bars([timestep], [prev_timestep], self.final_alpha_cumprod)
        return ((1 - alpha_prod_prev) / (1 - alpha_prod_t) * (1 - alpha_prod_t / alpha_prod_prev))[0]

    @staticmethod
    def _noise_terms(eta, sqrt_variance, beta_prod_prev):
        """σ_t(η) = η σ_t(1) and the direction coefficient √(1 - ᾱ_prev - σ_t²), as lists of floats.

        Computed with float32 torch ops like diffusers' (torch's float32 sqrt is not always correctly rounded,
        so python's math would differ from diffusers in the last bit). Clamped at 0: from SNR 0 with eta = 1 the
        radicand is 0 up to rounding, and can round below it."""
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
        return DDIMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
