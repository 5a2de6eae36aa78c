"""uncond/scheduler.py against diffusers' DDPMScheduler / DDIMScheduler: the same timesteps, the same numbers.

Full sampling loops with a stand-in model for every option and their combinations, diffusers' own pinned numbers
reproduced, and a few of ours pinned. The interface (config, outputs, errors) is in test_scheduler_api.py.
"""

import math

import diffusers
import pytest
import torch

from uncond import scheduler as ours

SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2"]
PREDICTIONS = ["epsilon", "v_prediction", "sample"]
SPACINGS = ["leading", "trailing", "linspace"]
STEPS = [1, 10, 50, 1000]
CLASSES = {"ddpm": (ours.DDPMScheduler, diffusers.DDPMScheduler), "ddim": (ours.DDIMScheduler, diffusers.DDIMScheduler)}


def fake_model(sample, t):
    """A deterministic stand-in for the UNet that depends on both x_t and t, so a wrong t shows."""
    return 0.8 * torch.tanh(sample) + 0.1 * math.cos(int(t) / 50)


def fake_model_with_variance(sample, t):
    """As fake_model, plus C channels of predicted variance in (0.1, 0.9) (valid for "learned" and "learned_range")."""
    return torch.cat([fake_model(sample, t), 0.5 + 0.4 * torch.tanh(sample + int(t) / 1000)], dim=1)


def run_loop(scheduler, num_inference_steps=None, shape=(2, 3, 4, 4), dtype=torch.float32, model=fake_model, **kw):
    """The diffusers sampling loop; returns the timesteps and the stacked prev_sample / pred_original_sample.

    num_inference_steps=None skips set_timesteps (DDPM then walks all training timesteps); a list is a custom one."""
    if isinstance(num_inference_steps, list):
        scheduler.set_timesteps(timesteps=num_inference_steps)
    elif num_inference_steps is not None:
        scheduler.set_timesteps(num_inference_steps)
    generator = torch.Generator().manual_seed(1)  # drives the step noise (DDPM, DDIM eta > 0)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    prev, x0 = [], []
    for t in scheduler.timesteps:
        out = scheduler.step(model(x, t), t, x, generator=generator, **kw)
        x = out.prev_sample
        prev.append(out.prev_sample)
        x0.append(out.pred_original_sample)
    return scheduler.timesteps, torch.stack(prev), torch.stack(x0)


def assert_same_loop(name, config, num_inference_steps, atol=1e-5, **kwargs):
    mine, theirs = CLASSES[name]
    ts_mine, prev_mine, x0_mine = run_loop(mine(**config), num_inference_steps, **kwargs)
    ts_theirs, prev_theirs, x0_theirs = run_loop(theirs(**config), num_inference_steps, **kwargs)
    assert ts_mine.dtype == torch.int64 and ts_mine.device.type == "cpu"
    assert torch.equal(ts_mine, ts_theirs)
    torch.testing.assert_close(x0_mine, x0_theirs, atol=atol, rtol=0, equal_nan=True)
    torch.testing.assert_close(prev_mine, prev_theirs, atol=atol, rtol=0, equal_nan=True)


def small_shape(num_inference_steps):
    return (1, 1, 2, 2) if num_inference_steps in (1000, None) else (2, 3, 4, 4)  # long loops get a tiny sample


# --- full sampling loops: every schedule x prediction x spacing x step count ---


@pytest.mark.parametrize("num_inference_steps", STEPS)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_loop_matches_diffusers(variance_type, schedule, prediction, spacing, num_inference_steps):
    config = dict(
        beta_schedule=schedule,
        prediction_type=prediction,
        timestep_spacing=spacing,
        variance_type=variance_type,
        clip_sample=False,
    )  # unclipped x_0 is the harder case numerically
    assert_same_loop("ddpm", config, num_inference_steps, shape=small_shape(num_inference_steps))


@pytest.mark.parametrize("num_inference_steps", STEPS)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_loop_matches_diffusers(eta, schedule, prediction, spacing, num_inference_steps):
    config = dict(beta_schedule=schedule, prediction_type=prediction, timestep_spacing=spacing, clip_sample=False)
    assert_same_loop("ddim", config, num_inference_steps, shape=small_shape(num_inference_steps), eta=eta)


OPTIONS = [
    dict(clip_sample=True),
    dict(clip_sample=True, clip_sample_range=0.5),
    dict(steps_offset=1),
    dict(steps_offset=1, clip_sample=True, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    dict(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2"),
]

NEW_OPTIONS = [  # dynamic thresholding (replaces clip_sample), zero terminal SNR, trained betas, and together
    dict(thresholding=True, sample_max_value=1.5),
    dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=3.0, clip_sample=False),
    dict(rescale_betas_zero_snr=True, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    dict(rescale_betas_zero_snr=True, thresholding=True, sample_max_value=2.0, beta_schedule="squaredcos_cap_v2"),
    dict(trained_betas=torch.linspace(0.001, 0.03, 1000).tolist(), steps_offset=1),
]


@pytest.mark.parametrize("num_inference_steps", [10, 37])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_options_match_diffusers(variance_type, options, prediction, spacing, num_inference_steps):
    config = dict(options, prediction_type=prediction, timestep_spacing=spacing, variance_type=variance_type)
    assert_same_loop("ddpm", config, num_inference_steps)


@pytest.mark.parametrize("num_inference_steps", [10, 37])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("set_alpha_to_one", [True, False])
@pytest.mark.parametrize(("eta", "use_clipped_model_output"), [(0.0, False), (1.0, False), (0.5, True)])
def test_ddim_options_match_diffusers(
    eta, use_clipped_model_output, set_alpha_to_one, options, prediction, spacing, num_inference_steps
):
    config = dict(options, prediction_type=prediction, timestep_spacing=spacing, set_alpha_to_one=set_alpha_to_one)
    assert_same_loop("ddim", config, num_inference_steps, eta=eta, use_clipped_model_output=use_clipped_model_output)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("options", NEW_OPTIONS)
def test_ddpm_new_options_match_diffusers(options, prediction, spacing):
    assert_same_loop("ddpm", dict(options, prediction_type=prediction, timestep_spacing=spacing), 12)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("options", NEW_OPTIONS)
@pytest.mark.parametrize(("eta", "use_clipped_model_output"), [(0.0, False), (0.5, True)])
def test_ddim_new_options_match_diffusers(eta, use_clipped_model_output, options, prediction, spacing):
    config = dict(options, prediction_type=prediction, timestep_spacing=spacing)
    assert_same_loop("ddim", config, 12, eta=eta, use_clipped_model_output=use_clipped_model_output)


def test_ddim_eta_1_from_zero_snr_is_finite():
    """At SNR 0, σ_t(η=1)² = 1 - ᾱ_prev, so the direction coefficient √(1 - ᾱ_prev - σ_t²) is 0 but for rounding.
    diffusers 0.42 takes the square root of that rounding error, which can be negative (NaN); ours clamps it at 0.
    Where it rounds up instead (+1 ulp on the current CI machine, an AVX-512 Xeon; <= 0 where these tests were first
    run), both keep its square root, 2.4e-4: ours computes the coefficients as diffusers does, bit for bit, and stays within
    √(4 eps) of the formula's 0 (the parity tests hold ours to diffusers' rounding everywhere else)."""
    scheduler = ours.DDIMScheduler(
        rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing"
    )
    scheduler.set_timesteps(37)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    out = scheduler.step(fake_model(x, 999), 999, x, eta=1.0, variance_noise=noise)
    alpha_prev = scheduler.alphas_cumprod[999 - 1000 // 37]
    expected = alpha_prev**0.5 * out.pred_original_sample + (1 - alpha_prev) ** 0.5 * noise
    assert out.prev_sample.isfinite().all()
    # the direction term's share: at most √(4 eps) times ε, which at SNR 0 (v-prediction) is x itself
    rounding = (4 * torch.finfo(torch.float32).eps) ** 0.5 * x.abs()
    assert ((out.prev_sample - expected).abs() <= rounding + 1e-6).all()


@pytest.mark.parametrize("num_inference_steps", [None, 10, [700, 420, 99, 3]])
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_small_log", "fixed_large", "learned", "learned_range"])
def test_ddpm_variance_types_match_diffusers(variance_type, prediction, num_inference_steps):
    model = fake_model_with_variance if variance_type.startswith("learned") else fake_model
    config = dict(variance_type=variance_type, prediction_type=prediction, beta_schedule="squaredcos_cap_v2")
    assert_same_loop("ddpm", config, num_inference_steps, shape=small_shape(num_inference_steps), model=model)


def test_ddpm_fixed_large_log_is_fixed_large_where_diffusers_gives_nan():
    """diffusers 0.42 steps with √(log β_t), which is NaN; ours with σ_t = exp(½ log β_t) = √β_t, as meant."""
    _, log_prev, _ = run_loop(ours.DDPMScheduler(variance_type="fixed_large_log"), 10)
    _, prev, _ = run_loop(ours.DDPMScheduler(variance_type="fixed_large"), 10)
    _, theirs, _ = run_loop(diffusers.DDPMScheduler(variance_type="fixed_large_log"), 10)
    torch.testing.assert_close(log_prev, prev, atol=1e-6, rtol=0)
    assert theirs[:-1].isnan().all() or torch.allclose(theirs, prev)  # NaN at every step but the last (no noise)


@pytest.mark.parametrize("options", [{}, dict(prediction_type="v_prediction"), dict(thresholding=True)])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_without_set_timesteps_walks_every_training_step_like_diffusers(variance_type, options):
    config = dict(options, variance_type=variance_type, beta_schedule="squaredcos_cap_v2")
    assert_same_loop("ddpm", config, None, shape=(1, 1, 2, 2))


@pytest.mark.parametrize("timesteps", [[999, 800, 500, 100, 0], [100, 87, 50, 1, 0], [600, 250], [0]])
@pytest.mark.parametrize("options", [{}, dict(prediction_type="v_prediction", thresholding=True)])
def test_ddpm_custom_timesteps_match_diffusers(options, timesteps):
    assert_same_loop("ddpm", dict(options, beta_schedule="squaredcos_cap_v2"), timesteps)


def test_trained_betas_as_numpy_list_or_tensor_match_diffusers():
    betas = diffusers.DDPMScheduler(beta_schedule="scaled_linear").betas
    for trained_betas in (betas.numpy(), betas.tolist(), betas):
        assert_same_loop("ddpm", dict(trained_betas=trained_betas), 20)
        assert_same_loop("ddim", dict(trained_betas=trained_betas), 20, eta=1.0)


def test_sigmoid_schedule_matches_diffusers_ddpm():  # diffusers' DDIM has no sigmoid; ours takes it in both
    assert_same_loop("ddpm", dict(beta_schedule="sigmoid", prediction_type="v_prediction"), 25)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_float64_loop_matches_diffusers(name):
    kwargs = {"eta": 1.0} if name == "ddim" else {}
    assert_same_loop(name, dict(clip_sample=False), 20, dtype=torch.float64, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_half_precision_step_is_close_to_diffusers(name, dtype):
    """Not bit-equal: on CPU diffusers rounds its float32 coefficients to the sample dtype when they come first
    (`coef * x`), while python-float coefficients stay float32 inside the kernel (as on CUDA, for both)."""
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)).to(dtype)
    outputs = []
    for cls in CLASSES[name]:
        scheduler = cls(prediction_type="v_prediction", thresholding=True, sample_max_value=1.5)
        scheduler.set_timesteps(10)
        t = scheduler.timesteps[2]
        out = scheduler.step(fake_model(x, t), t, x, generator=torch.Generator().manual_seed(1))
        assert out.prev_sample.dtype == dtype
        outputs.append(out.prev_sample.float())
    torch.testing.assert_close(outputs[0], outputs[1], atol=2e-2, rtol=2e-2)


def test_ddim_variance_noise_matches_diffusers():
    config = dict(beta_schedule="scaled_linear", prediction_type="v_prediction")
    mine, theirs = ours.DDIMScheduler(**config), diffusers.DDIMScheduler(**config)
    for scheduler in (mine, theirs):
        scheduler.set_timesteps(25)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    t = mine.timesteps[3]
    a = mine.step(fake_model(x, t), t, x, eta=0.3, variance_noise=noise)
    b = theirs.step(fake_model(x, t), t, x, eta=0.3, variance_noise=noise)
    torch.testing.assert_close(a.prev_sample, b.prev_sample, atol=1e-6, rtol=0)


def test_ddim_accepts_timesteps_off_the_schedule_like_diffusers():
    mine, theirs = ours.DDIMScheduler(), diffusers.DDIMScheduler()
    for scheduler in (mine, theirs):
        scheduler.set_timesteps(10)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    a, b = mine.step(fake_model(x, 555), 555, x), theirs.step(fake_model(x, 555), 555, x)
    torch.testing.assert_close(a.prev_sample, b.prev_sample, atol=1e-6, rtol=0)


# --- pinned numbers ---


def deterministic(reverse=False):
    """diffusers' test input: 0, 1, ..., 767 (reversed for its "noise") / 768, laid out as (4, 3, 8, 8)."""
    values = torch.arange(768).flip(-1) if reverse else torch.arange(768)
    return (values.reshape(3, 8, 8, 4) / 768).permute(3, 0, 1, 2)


def shrinking_model(sample, t):
    """diffusers' test model: x_t t / (t + 1)."""
    return sample * int(t) / (int(t) + 1)


def sum_and_mean(x):
    return x.abs().sum().item(), x.abs().mean().item()


# (config, steps (None: all training steps, without set_timesteps), sum, mean), as diffusers' tests pin them
DIFFUSERS_PINNED = [
    ("ddpm", dict(), None, 258.9606, 0.3372),
    ("ddpm", dict(prediction_type="v_prediction"), None, 202.0296, 0.2631),
    ("ddim", dict(), 10, 172.0067, 0.223967),
    ("ddim", dict(prediction_type="v_prediction"), 10, 52.5302, 0.0684),
    ("ddim", dict(set_alpha_to_one=True, beta_start=0.01), 10, 149.8295, 0.1951),
    ("ddim", dict(set_alpha_to_one=False, beta_start=0.01), 10, 149.0784, 0.1941),
]


@pytest.mark.parametrize(("name", "config", "steps", "expected_sum", "expected_mean"), DIFFUSERS_PINNED)
def test_diffusers_pinned_full_loops(name, config, steps, expected_sum, expected_mean):
    scheduler = CLASSES[name][0](**config)
    if steps is not None:
        scheduler.set_timesteps(steps)
    generator, sample = torch.Generator().manual_seed(0), deterministic()
    for t in scheduler.timesteps:
        sample = scheduler.step(shrinking_model(sample, t), t, sample, generator=generator).prev_sample
    total, mean = sum_and_mean(sample)
    assert abs(total - expected_sum) < 1e-2 and abs(mean - expected_mean) < 1e-3


@pytest.mark.parametrize(("name", "steps", "start", "expected_sum", "expected_mean"), [
    ("ddpm", None, 998, 387.9466, 0.5051),
    ("ddim", 10, 8, 354.5418, 0.4616),
])  # fmt: skip
def test_diffusers_pinned_loops_from_a_noised_sample(name, steps, start, expected_sum, expected_mean):
    scheduler = CLASSES[name][0]()
    if steps is not None:
        scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps[start:]
    sample = scheduler.add_noise(deterministic(), deterministic(reverse=True), timesteps[:1])
    generator = torch.Generator().manual_seed(0)
    for t in timesteps:
        sample = scheduler.step(shrinking_model(sample, t), t, sample, generator=generator).prev_sample
    total, mean = sum_and_mean(sample)
    assert abs(total - expected_sum) < 1e-2 and abs(mean - expected_mean) < 1e-3


GUIDED = dict(eta=0.0, use_clipped_model_output=True)  # as the text-to-image pipeline steps when guided
# The shipped text-to-image schedule, with the two new options. The loops run in float64 (sample, model and the
# per-step noise): 20 steps of a model that multiplies differences by up to 12 amplified float32 rounding to 1.0 in
# the sum (139.3886 on one CPU, 138.4218 on another, for the eta-0.5 row); in float64 the four kernel settings of
# README Tests (ATEN_CPU_CAPABILITY default, avx2, avx512; ONEDNN_MAX_CPU_ISA=AVX2) agree to 12 digits, diffusers too.
OURS_PINNED = [
    ("ddim", dict(thresholding=True, sample_max_value=1.5), GUIDED, 700.923466, 0.91266076),
    ("ddim", dict(rescale_betas_zero_snr=True), dict(eta=0.5), 137.345033, 0.17883468),
    ("ddpm", dict(rescale_betas_zero_snr=True, thresholding=True, sample_max_value=2.0), {}, 245.178559, 0.31924292),
]


@pytest.mark.parametrize(("name", "options", "step_kwargs", "expected_sum", "expected_mean"), OURS_PINNED)
def test_pinned_loops_with_thresholding_and_zero_snr(name, options, step_kwargs, expected_sum, expected_mean):
    config = dict(
        beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", timestep_spacing="trailing", **options
    )
    totals = []
    for cls in CLASSES[name]:
        scheduler = cls(**config)
        scheduler.set_timesteps(20)
        generator, sample = torch.Generator().manual_seed(0), (2 * deterministic() - 1).double()
        for t in scheduler.timesteps:
            model_output = 3 * torch.sin(4 * sample + int(t) / 100)  # overshoots, so thresholding acts
            sample = scheduler.step(model_output, t, sample, generator=generator, **step_kwargs).prev_sample
        totals.append(sum_and_mean(sample))
    assert totals[0] == pytest.approx(totals[1], abs=1e-9)
    assert abs(totals[0][0] - expected_sum) < 1e-5 and abs(totals[0][1] - expected_mean) < 1e-7
