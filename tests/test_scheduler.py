"""uncond/scheduler.py against diffusers' DDPMScheduler / DDIMScheduler: same timesteps, same numbers."""

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


def run_loop(scheduler, num_inference_steps, shape=(2, 3, 4, 4), dtype=torch.float32, **step_kwargs):
    """The diffusers sampling loop; returns the timesteps and the stacked prev_sample / pred_original_sample."""
    scheduler.set_timesteps(num_inference_steps)
    generator = torch.Generator().manual_seed(1)  # drives the step noise (DDPM, DDIM eta > 0)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    prev, x0 = [], []
    for t in scheduler.timesteps:
        out = scheduler.step(fake_model(x, t), t, x, generator=generator, **step_kwargs)
        x = out.prev_sample
        prev.append(out.prev_sample)
        x0.append(out.pred_original_sample)
    return scheduler.timesteps, torch.stack(prev), torch.stack(x0)


def assert_same_loop(name, config, num_inference_steps, **kwargs):
    mine, theirs = CLASSES[name]
    ts_mine, prev_mine, x0_mine = run_loop(mine(**config), num_inference_steps, **kwargs)
    ts_theirs, prev_theirs, x0_theirs = run_loop(theirs(**config), num_inference_steps, **kwargs)
    assert ts_mine.dtype == torch.int64 and ts_mine.device.type == "cpu"
    assert torch.equal(ts_mine, ts_theirs)
    torch.testing.assert_close(x0_mine, x0_theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(prev_mine, prev_theirs, atol=1e-5, rtol=0)


def small_shape(num_inference_steps):
    return (1, 1, 2, 2) if num_inference_steps == 1000 else (2, 3, 4, 4)  # long loops get a tiny sample


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
        scheduler = cls(prediction_type="v_prediction")
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


# --- timesteps ---


@pytest.mark.parametrize(
    ("spacing", "steps_offset"), [("leading", 0), ("leading", 1), ("trailing", 0), ("linspace", 0)]
)
def test_timesteps_match_diffusers_for_every_step_count(spacing, steps_offset):
    for n in range(1, 1000 + (steps_offset == 0)):  # leading + offset 1 + n = 1000 would reach t = 1000
        theirs = diffusers.DDIMScheduler(timestep_spacing=spacing, steps_offset=steps_offset)
        theirs.set_timesteps(n)
        expected = theirs.timesteps.tolist()
        if len(expected) == n + 1 and expected[-1] == -1:
            expected = expected[:-1]  # numpy.arange's float step adds a spurious t = -1 for some n (e.g. 61)
        assert ours.spaced_timesteps(spacing, n, 1000, steps_offset) == expected, n


def test_timesteps_device_and_default():
    scheduler = ours.DDIMScheduler()
    assert torch.equal(scheduler.timesteps, diffusers.DDIMScheduler().timesteps)  # before set_timesteps
    scheduler.set_timesteps(10, device="meta")
    assert scheduler.timesteps.device.type == "meta" and scheduler.timesteps.dtype == torch.int64
    scheduler.set_timesteps(10)
    assert scheduler.timesteps.device.type == "cpu"


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_timestep_as_int_cpu_tensor_or_device_tensor(name):
    """step() reads t from a python int or CPU tensor, and never reads a device tensor (meta stands in for one)."""
    results = []
    for as_type in (int, lambda t: t, lambda t: t.to("meta")):
        scheduler = CLASSES[name][0](beta_schedule="squaredcos_cap_v2")
        scheduler.set_timesteps(8)
        x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        generator = torch.Generator().manual_seed(1)
        for t in scheduler.timesteps:
            x = scheduler.step(fake_model(x, t), as_type(t), x, generator=generator).prev_sample
        results.append(x)
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


def test_ddim_accepts_timesteps_off_the_schedule_like_diffusers():
    mine, theirs = ours.DDIMScheduler(), diffusers.DDIMScheduler()
    for scheduler in (mine, theirs):
        scheduler.set_timesteps(10)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    a, b = mine.step(fake_model(x, 555), 555, x), theirs.step(fake_model(x, 555), 555, x)
    torch.testing.assert_close(a.prev_sample, b.prev_sample, atol=1e-6, rtol=0)


# --- forward process ---


@pytest.mark.parametrize("shape", [(5, 7), (5, 3, 4, 4), (5, 2, 3, 4, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_add_noise_and_velocity_match_diffusers(schedule, dtype, shape):
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(shape, generator=generator).to(dtype)
    noise = torch.randn(shape, generator=generator).to(dtype)
    t = torch.tensor([0, 1, 500, 998, 999])
    mine, theirs = ours.DDPMScheduler(beta_schedule=schedule), diffusers.DDPMScheduler(beta_schedule=schedule)
    for method in ("add_noise", "get_velocity"):
        got, expected = getattr(mine, method)(x0, noise, t), getattr(theirs, method)(x0, noise, t)
        assert got.dtype == dtype and got.shape == x0.shape
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_betas_and_alphas_match_diffusers():
    for schedule in SCHEDULES:
        mine, theirs = ours.DDIMScheduler(beta_schedule=schedule), diffusers.DDIMScheduler(beta_schedule=schedule)
        for name in ("betas", "alphas", "alphas_cumprod"):
            assert torch.equal(getattr(mine, name), getattr(theirs, name)), (schedule, name)
        assert torch.equal(mine.final_alpha_cumprod, theirs.final_alpha_cumprod)


# --- interface and config ---


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_defaults_and_interface_match_diffusers(name):
    mine, theirs = (cls() for cls in CLASSES[name])
    for key, value in mine.config.items():
        assert theirs.config[key] == value, key
        assert getattr(mine.config, key) == value
    assert mine.init_noise_sigma == theirs.init_noise_sigma == 1.0
    assert len(mine) == len(theirs) == 1000 and mine.order == 1
    x = torch.randn(2, 3, 4, 4)
    assert mine.scale_model_input(x, 10) is x


def test_from_config_round_trips_and_crosses_classes():
    ddpm = ours.DDPMScheduler(
        beta_schedule="scaled_linear", prediction_type="v_prediction", variance_type="fixed_large"
    )
    assert ours.DDPMScheduler.from_config(ddpm.config).config == ddpm.config
    ddim = ours.DDIMScheduler.from_config(ddpm.config, timestep_spacing="trailing")
    assert ddim.config.prediction_type == "v_prediction" and ddim.config.timestep_spacing == "trailing"
    from_diffusers = ours.DDIMScheduler.from_config(diffusers.DDIMScheduler(steps_offset=1).config)
    assert from_diffusers.config.steps_offset == 1
    assert diffusers.DDIMScheduler.from_config(ddim.config).config.timestep_spacing == "trailing"
    with pytest.raises(ValueError, match="thresholding"):
        ours.DDIMScheduler.from_config(diffusers.DDIMScheduler(thresholding=True).config)


# --- errors ---

BAD_ARGUMENTS = [
    ("beta_schedule", dict(beta_schedule="cosine")),
    ("prediction_type", dict(prediction_type="x0")),
    ("timestep_spacing", dict(timestep_spacing="uniform")),
    ("num_train_timesteps", dict(num_train_timesteps=0)),
]


@pytest.mark.parametrize(("argument", "kwargs"), BAD_ARGUMENTS)
@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_bad_constructor_arguments_raise(name, argument, kwargs):
    with pytest.raises(ValueError, match=argument):
        CLASSES[name][0](**kwargs)


def test_bad_variance_type_raises():
    with pytest.raises(ValueError, match="variance_type.*fixed_small"):
        ours.DDPMScheduler(variance_type="learned")


@pytest.mark.parametrize("num_inference_steps", [0, -3, 1001, 2.5, "10", True, None])
@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_bad_num_inference_steps_raise(name, num_inference_steps):
    with pytest.raises(ValueError, match="num_inference_steps"):
        CLASSES[name][0]().set_timesteps(num_inference_steps)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_step_before_set_timesteps_raises(name):
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="set_timesteps"):
        CLASSES[name][0]().step(x, 999, x)


def test_steps_offset_past_last_timestep_raises():
    with pytest.raises(ValueError, match="steps_offset"):
        ours.DDIMScheduler(steps_offset=1).set_timesteps(1000)


def test_ddpm_timestep_off_the_schedule_raises():
    scheduler = ours.DDPMScheduler()
    scheduler.set_timesteps(10)
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="timestep"):
        scheduler.step(x, 555, x)
