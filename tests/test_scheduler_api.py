"""uncond/scheduler.py as a diffusers user meets it: signatures, config and folders, step outputs, errors.

The numbers are in test_scheduler.py; here code written for diffusers' classes runs unchanged on ours.
"""

import inspect
import json
import math
import os

import diffusers
import pytest
import torch
from default_dtype import default_dtype
from diffusers.utils import BaseOutput

from uncond import scheduler as ours

CLASSES = {"ddpm": (ours.DDPMScheduler, diffusers.DDPMScheduler), "ddim": (ours.DDIMScheduler, diffusers.DDIMScheduler)}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_model(sample, t):
    return 0.8 * torch.tanh(sample) + 0.1 * math.cos(int(t) / 50)


def parameters(function):
    """(name, default) of each parameter, in order; annotations aside."""
    return [(p.name, p.default) for p in inspect.signature(function).parameters.values()]


# --- the same signatures ---


@pytest.mark.parametrize(
    "method", ["__init__", "step", "set_timesteps", "add_noise", "get_velocity", "scale_model_input"]
)
@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_signatures_match_diffusers(name, method):
    """Names, order and defaults, so positional and keyword calls written for diffusers mean the same here."""
    mine, theirs = (getattr(cls, method) for cls in CLASSES[name])
    assert parameters(mine) == parameters(theirs)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_defaults_and_interface_match_diffusers(name):
    mine, theirs = (cls() for cls in CLASSES[name])
    assert {k: v for k, v in mine.config.items() if not k.startswith("_")} == {
        k: v for k, v in theirs.config.items() if not k.startswith("_")
    }
    assert mine.config.num_train_timesteps == mine.config["num_train_timesteps"] == 1000
    assert mine.init_noise_sigma == theirs.init_noise_sigma == 1.0
    assert len(mine) == len(theirs) == 1000 and mine.order == theirs.order == 1
    assert torch.equal(mine.timesteps, theirs.timesteps) and mine.num_inference_steps is None  # before set_timesteps
    x = torch.randn(2, 3, 4, 4)
    assert mine.scale_model_input(x, 10) is x


# --- step outputs ---


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_step_output_behaves_like_diffusers(name):
    scheduler = CLASSES[name][0]()
    scheduler.set_timesteps(10)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    t = scheduler.timesteps[3]
    out = scheduler.step(fake_model(x, t), t, x, generator=torch.Generator().manual_seed(1))
    as_tuple = scheduler.step(fake_model(x, t), t, x, generator=torch.Generator().manual_seed(1), return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
    prev_sample, pred_original_sample = as_tuple
    assert isinstance(out, BaseOutput) and type(out).__name__ == f"{name.upper()}SchedulerOutput"
    assert out[0] is out.prev_sample is out["prev_sample"] and out[1] is out.pred_original_sample
    assert torch.equal(prev_sample, out.prev_sample) and torch.equal(pred_original_sample, out.pred_original_sample)
    assert list(out.keys()) == ["prev_sample", "pred_original_sample"] and len(out.to_tuple()) == 2


# --- config, folders, compatibles ---


def test_from_config_crosses_classes_and_libraries():
    ddpm = ours.DDPMScheduler(
        beta_schedule="scaled_linear", prediction_type="v_prediction", variance_type="fixed_large"
    )
    assert ours.DDPMScheduler.from_config(ddpm.config).config == ddpm.config
    ddim = ours.DDIMScheduler.from_config(ddpm.config, timestep_spacing="trailing", thresholding=True)
    assert ddim.config.prediction_type == "v_prediction" and ddim.config.thresholding
    assert "variance_type" not in inspect.signature(type(ddim)).parameters
    assert ours.DDIMScheduler.from_config(diffusers.DDIMScheduler(steps_offset=1).config).config.steps_offset == 1
    theirs = diffusers.DDIMScheduler.from_config(ddim.config)
    assert theirs.config.timestep_spacing == "trailing" and theirs.config.thresholding
    assert torch.equal(theirs.alphas_cumprod, ddim.alphas_cumprod)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_save_pretrained_writes_diffusers_file_and_round_trips(name, tmp_path):
    config = dict(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", thresholding=True)
    mine, theirs = (cls(**config) for cls in CLASSES[name])
    mine.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    written = (tmp_path / "ours" / "scheduler_config.json").read_text()
    assert written == (tmp_path / "theirs" / "scheduler_config.json").read_text()  # byte for byte
    assert json.loads(written)["_class_name"] == CLASSES[name][1].__name__
    loaded = CLASSES[name][0].from_pretrained(tmp_path / "theirs")  # a diffusers folder loads on ours
    assert type(loaded) is CLASSES[name][0]
    assert {k: v for k, v in mine.config.items() if k != "_use_default_values"} == dict(loaded.config)
    assert torch.equal(loaded.alphas_cumprod, mine.alphas_cumprod)
    assert torch.equal(CLASSES[name][1].from_pretrained(tmp_path / "ours").alphas_cumprod, mine.alphas_cumprod)


@pytest.mark.parametrize("folder", ["uncond", "txt2img"])
def test_the_shipped_scheduler_folders_load(folder):
    path = os.path.join(ROOT, "weights", folder)
    with open(os.path.join(path, "scheduler_config.json")) as f:
        shipped = json.load(f)
    for cls in (ours.DDPMScheduler, ours.DDIMScheduler):
        scheduler = cls.from_pretrained(path)
        assert {k: scheduler.config[k] for k in shipped} == shipped


def test_trained_betas_survive_a_folder(tmp_path):
    import numpy as np

    scheduler = ours.DDIMScheduler(trained_betas=np.array([0.1, 0.3]))  # any length, as diffusers
    scheduler.save_pretrained(tmp_path)
    assert ours.DDIMScheduler.from_pretrained(tmp_path).betas.tolist() == scheduler.betas.tolist()


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_compatibles_build_from_our_config(name):
    scheduler = CLASSES[name][0](beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    compatibles = scheduler.compatibles
    assert compatibles[:2] == [ours.DDPMScheduler, ours.DDIMScheduler]
    assert diffusers.EulerDiscreteScheduler in compatibles and diffusers.DDIMScheduler not in compatibles
    for cls in compatibles:
        assert cls.from_config(scheduler.config).config.prediction_type == "v_prediction"


def test_register_to_config_updates_the_config():
    scheduler = ours.DDIMScheduler()
    scheduler.register_to_config(clip_sample_range=2.0)  # as diffusers users patch a loaded scheduler
    assert scheduler.config.clip_sample_range == 2.0


# --- code written for diffusers, run unchanged on either library ---


def diffusers_user_code(library, folder):
    """A training step and three sampling loops as diffusers' docs write them; `library` is diffusers or ours."""
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 3, 8, 8, generator=generator) * 2 - 1
    noise_scheduler = library.DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    noise = torch.randn(clean.shape, generator=generator)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (4,), generator=generator)
    results = [
        noise_scheduler.add_noise(clean, noise, timesteps),
        noise_scheduler.get_velocity(clean, noise, timesteps),
    ]

    sample = torch.randn(1, 3, 8, 8, generator=generator)
    for t in noise_scheduler.timesteps:  # no set_timesteps: every training step
        residual = fake_model(sample, t)
        sample = noise_scheduler.step(residual, t, sample, generator=generator).prev_sample
    results.append(sample)

    noise_scheduler.set_timesteps(timesteps=[90, 60, 30, 10, 0])
    for t in noise_scheduler.timesteps:
        sample = noise_scheduler.step(fake_model(sample, t), t, sample, generator=generator)["prev_sample"]
    results += [sample, noise_scheduler.previous_timestep(noise_scheduler.timesteps[1])]

    scheduler = library.DDIMScheduler.from_config(noise_scheduler.config, rescale_betas_zero_snr=True)
    scheduler.register_to_config(timestep_spacing="trailing", prediction_type="v_prediction", thresholding=True)
    scheduler.save_pretrained(folder)
    scheduler = library.DDIMScheduler.from_pretrained(folder)
    scheduler.set_timesteps(10)
    latents = torch.randn(2, 3, 8, 8, generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        latents = scheduler.step(fake_model(model_input, t), t, latents, 0.5, generator=generator)[0]
    return results + [latents]


def test_diffusers_user_code_runs_unchanged_with_the_same_numbers(tmp_path):
    mine = diffusers_user_code(ours, tmp_path / "ours")
    theirs = diffusers_user_code(diffusers, tmp_path / "theirs")
    assert len(mine) == len(theirs) == 6
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# --- custom timesteps and errors ---


def error_of(call):
    with pytest.raises(ValueError) as error:
        call()
    return str(error.value)


CUSTOM_TIMESTEP_ERRORS = [
    dict(timesteps=[100, 87, 50, 51, 0]),  # not descending
    dict(timesteps=[1000, 10]),  # past num_train_timesteps - 1
    dict(num_inference_steps=5, timesteps=[100, 87, 50, 1, 0]),  # both
    dict(num_inference_steps=1001),
]


@pytest.mark.parametrize("kwargs", CUSTOM_TIMESTEP_ERRORS)
def test_set_timesteps_errors_are_diffusers_own(kwargs):
    mine, theirs = ours.DDPMScheduler(), diffusers.DDPMScheduler()
    assert error_of(lambda: mine.set_timesteps(**kwargs)) == error_of(lambda: theirs.set_timesteps(**kwargs))


def test_custom_timesteps_and_previous_timestep_as_diffusers():
    mine, theirs = ours.DDPMScheduler(), diffusers.DDPMScheduler()
    assert mine.previous_timestep(500) == theirs.previous_timestep(500) == 499  # before set_timesteps: t - 1
    for scheduler in (mine, theirs):
        scheduler.set_timesteps(timesteps=[100, 87, 50, 1, 0])
    assert mine.custom_timesteps and torch.equal(mine.timesteps, theirs.timesteps)
    assert [mine.previous_timestep(t).item() for t in mine.timesteps] == [87, 50, 1, 0, -1]
    assert [theirs.previous_timestep(t).item() for t in theirs.timesteps] == [87, 50, 1, 0, -1]
    with pytest.raises(ValueError, match="must be >= 0"):
        mine.set_timesteps(timesteps=[5, -1])
    mine.set_timesteps(4)
    assert not mine.custom_timesteps and mine.timesteps.tolist() == [750, 500, 250, 0]


def test_private_variances_diffusers_tests_read():
    ddpm, ddim = ours.DDPMScheduler(), ours.DDIMScheduler()
    for t, expected in [(0, 0.0), (487, 0.00979), (999, 0.02)]:
        assert ddpm._get_variance(t).item() == pytest.approx(expected, abs=1e-5)
    for (t, prev), expected in [((420, 400), 0.14771), ((980, 960), 0.32460), ((487, 486), 0.00979)]:
        assert ddim._get_variance(t, prev).item() == pytest.approx(expected, abs=1e-5)
    theirs = diffusers.DDPMScheduler()
    for kind in ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log"):
        assert torch.equal(ddpm._get_variance(487, variance_type=kind), theirs._get_variance(487, variance_type=kind))


BAD_ARGUMENTS = [
    ("beta_schedule", dict(beta_schedule="cosine")),
    ("prediction_type", dict(prediction_type="x0")),
    ("timestep_spacing", dict(timestep_spacing="uniform")),
    ("num_train_timesteps", dict(num_train_timesteps=0)),
    ("dynamic_thresholding_ratio", dict(thresholding=True, dynamic_thresholding_ratio=1.5)),
]


@pytest.mark.parametrize(("argument", "kwargs"), BAD_ARGUMENTS)
@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_bad_constructor_arguments_raise(name, argument, kwargs):
    with pytest.raises(ValueError, match=f"^{argument} must be "):  # the message starts with the argument's name
        CLASSES[name][0](**kwargs)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_a_one_step_training_schedule_is_allowed(name):
    scheduler = CLASSES[name][0](num_train_timesteps=1)  # the smallest schedule: T = 1 is valid, T = 0 is not
    scheduler.set_timesteps(1)
    assert scheduler.timesteps.tolist() == [0] and len(scheduler.alphas_cumprod) == 1


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_a_dynamic_thresholding_ratio_of_1_is_allowed(name):
    # ratio 1 takes s = max |x_0| per sample (the edge of diffusers' range, (0, 1]); diffusers accepts it too
    scheduler = CLASSES[name][0](thresholding=True, dynamic_thresholding_ratio=1.0, sample_max_value=2.0)
    assert scheduler.config.dynamic_thresholding_ratio == 1.0


def test_options_off_are_accepted_whatever_their_settings():
    ours.DDIMScheduler(thresholding=False, dynamic_thresholding_ratio=1.5, trained_betas=None)


def test_bad_variance_type_raises():
    with pytest.raises(ValueError, match="variance_type.*fixed_small"):
        ours.DDPMScheduler(variance_type="other")  # diffusers takes it, and steps as fixed_small


def test_learned_variance_needs_the_variance_channels():
    scheduler = ours.DDPMScheduler(variance_type="learned_range")
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="variance_type='learned_range'.*twice"):
        scheduler.step(x, 500, x)


@pytest.mark.parametrize("num_inference_steps", [0, -3, 1001, 2.5, "10", True, None])
@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_bad_num_inference_steps_raise(name, num_inference_steps):
    with pytest.raises(ValueError, match="num_inference_steps"):
        CLASSES[name][0]().set_timesteps(num_inference_steps)


def test_ddim_step_before_set_timesteps_raises_as_diffusers():
    x = torch.zeros(1, 3, 4, 4)
    mine, theirs = (cls() for cls in CLASSES["ddim"])
    assert error_of(lambda: mine.step(x, 999, x)) == error_of(lambda: theirs.step(x, 999, x))


def test_steps_offset_past_last_timestep_raises():
    with pytest.raises(ValueError, match="steps_offset"):
        ours.DDIMScheduler(steps_offset=1).set_timesteps(1000)


def test_ddpm_timestep_off_the_schedule_raises():
    scheduler = ours.DDPMScheduler()
    scheduler.set_timesteps(10)
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="timestep"):
        scheduler.step(x, 555, x)


# --- timesteps on devices ---


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_timesteps_device(name):
    scheduler = CLASSES[name][0]()
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


@pytest.mark.parametrize("t", [0, 1, 487, 999])
@pytest.mark.parametrize("kind", ["fixed_small", "fixed_small_log", "fixed_large", "learned", "learned_range"])
def test_private_variance_of_every_type_matches_diffusers(kind, t):
    """`_get_variance` with the model's variance channels too (learned: σ_t² itself; learned_range: v in [-1, 1])."""
    predicted = torch.linspace(-0.9, 0.9, 6).reshape(1, 6, 1, 1)
    mine = ours.DDPMScheduler(beta_schedule="squaredcos_cap_v2")._get_variance(t, predicted, kind)
    theirs = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2")._get_variance(t, predicted, kind)
    torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=1e-5)


def _set(name, **kwargs):
    scheduler = CLASSES[name][0](num_train_timesteps=100)
    scheduler.set_timesteps(**kwargs)
    return scheduler


def _ddpm_off_schedule(call):
    scheduler = _set("ddpm", num_inference_steps=10)
    return call(scheduler)


def _both_noises():
    scheduler = _set("ddim", num_inference_steps=10)
    x = torch.zeros(1, 1, 2, 2)
    scheduler.step(x, 91, x, eta=1.0, generator=torch.Generator(), variance_noise=x)


EXACT_ERRORS = [
    (lambda: _set("ddpm", num_inference_steps=5, timesteps=[3, 2]),
     "Can only pass one of `num_inference_steps` or `custom_timesteps`."),
    (lambda: ours.DDPMScheduler(num_train_timesteps=10, trained_betas=[0.1] * 5).step(
        torch.zeros(1, 1, 2, 2), 9, torch.zeros(1, 1, 2, 2)), "trained_betas holds 5 betas, num_train_timesteps is 10"),
    (lambda: _ddpm_off_schedule(lambda s: s.previous_timestep(3)),
     "timestep 3 is not in scheduler.timesteps: DDPM steps along the set_timesteps() schedule"),
    (lambda: _ddpm_off_schedule(lambda s: s.step(torch.zeros(1, 1, 2, 2), 3, torch.zeros(1, 1, 2, 2))),
     "timestep 3 is not in scheduler.timesteps: DDPM steps along the set_timesteps() schedule"),
    (lambda: ours.DDPMScheduler(variance_type="learned").step(torch.zeros(1, 1, 2, 2), 999, torch.zeros(1, 1, 2, 2)),
     "variance_type='learned' needs a model_output with twice the sample's channels (the second half predicts the"
     " variance)"),
    (lambda: ours.DDIMScheduler().previous_timestep(999),
     "Number of inference steps is 'None', you need to run 'set_timesteps' after creating the scheduler"),
    (_both_noises, "pass either generator or variance_noise, not both"),
    (lambda: _set("ddim", num_inference_steps=0), "num_inference_steps must be an int in [1, num_train_timesteps=100]; got 0"),
    (lambda: _set("ddim", num_inference_steps=101),
     "`num_inference_steps`: 101 cannot be larger than `self.config.train_timesteps`: 100 as the unet model trained"
     " with this scheduler can only handle maximal 100 timesteps."),
    (lambda: _set("ddpm", timesteps=[]), "`custom_timesteps` must hold at least one timestep."),
    (lambda: _set("ddpm", timesteps=[5, 5]), "`custom_timesteps` must be in descending order."),
    (lambda: _set("ddpm", timesteps=[100, 5]), "`timesteps` must start before `self.config.train_timesteps`: 100."),
    (lambda: _set("ddpm", timesteps=[5, 3, -2]), "`custom_timesteps` must be >= 0; got -2."),
    (lambda: ours.DDIMScheduler(num_train_timesteps=True), "num_train_timesteps must be an int >= 1; got True"),
    (lambda: ours.DDIMScheduler(thresholding=True, dynamic_thresholding_ratio=0),
     "dynamic_thresholding_ratio must be in (0, 1]; got 0"),
    (lambda: ours.DDIMScheduler(num_train_timesteps=100, steps_offset=10, timestep_spacing="leading").set_timesteps(
        10), "steps_offset=10 puts timestep 100 past num_train_timesteps - 1 = 99"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "message"), EXACT_ERRORS, ids=range(len(EXACT_ERRORS)))
def test_every_scheduler_error_says_what_is_wrong_in_full(call, message):
    """Each ValueError's whole message (a mutant that blanks or changes one fails here, not only a match on a word)."""
    with pytest.raises(ValueError) as raised:
        call()
    assert str(raised.value) == message


def test_eta_0_draws_no_noise_from_the_generator_like_diffusers():
    """A deterministic step leaves the generator as it was (so the next draw is the same in both libraries)."""
    x = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    for cls in CLASSES["ddim"]:
        scheduler = cls()
        scheduler.set_timesteps(10)
        generator = torch.Generator().manual_seed(5)
        scheduler.step(fake_model(x, 901), 901, x, eta=0.0, generator=generator)
        assert torch.equal(generator.get_state(), torch.Generator().manual_seed(5).get_state()), cls


def test_custom_timesteps_flag_is_diffusers_own():
    """`custom_timesteps` is True after a custom list and False again after a step count, in both libraries."""
    for cls in CLASSES["ddpm"]:
        scheduler = cls()
        scheduler.set_timesteps(timesteps=[900, 500, 3])
        assert scheduler.custom_timesteps is True
        scheduler.set_timesteps(10)
        assert scheduler.custom_timesteps is False, cls


def test_dynamic_threshold_defaults_are_diffusers_config_defaults():
    """dynamic_threshold(x) with its defaults is diffusers' default (ratio 0.995, max 1.0): clip to [-1, 1]."""
    from uncond.schedule import dynamic_threshold

    x = torch.linspace(-3, 3, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    torch.testing.assert_close(dynamic_threshold(x), x.clamp(-1, 1), atol=0, rtol=0)
    defaults = {
        k: v.default for k, v in inspect.signature(dynamic_threshold).parameters.items() if k != "pred_original_sample"
    }
    config = diffusers.DDPMScheduler().config
    assert defaults == {"ratio": config.dynamic_thresholding_ratio, "max_value": config.sample_max_value}


@pytest.mark.parametrize("name", ["DDPMScheduler", "DDIMScheduler"])
def test_a_float64_default_dtype_changes_no_step(name):
    # The schedule's coefficients are float32 numbers, as diffusers' are: a float64 default dtype set by other code
    # (a notebook, a library) must not move a single bit of the steps of float32 samples.
    def run():
        scheduler = getattr(ours, name)(beta_schedule="squaredcos_cap_v2")
        scheduler.set_timesteps(10)
        generator = torch.Generator().manual_seed(0)
        x_t = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float32)
        kwargs = {"eta": 1.0} if name == "DDIMScheduler" else {}
        for t in scheduler.timesteps:
            model_output = 0.5 * x_t  # a stand-in model: the step's own formulas are what is tested
            x_t = scheduler.step(model_output, t, x_t, generator=generator, **kwargs).prev_sample
        return x_t

    expected = run()
    with default_dtype(torch.float64):
        got = run()
    assert got.dtype == torch.float32 and torch.equal(got, expected)


@pytest.mark.parametrize("name", ["DDPMScheduler", "DDIMScheduler"])
def test_step_noise_is_drawn_on_the_generators_device(name):
    # As diffusers: a CPU generator draws on the CPU whatever the samples' device, so a seed gives the same noise on
    # every device. On the meta device a draw would not advance the CPU generator; the step's draw must.
    scheduler = getattr(ours, name)()
    scheduler.set_timesteps(10)
    x_t = torch.zeros(1, 3, 4, 4, device="meta")
    generator = torch.Generator().manual_seed(0)
    kwargs = {"eta": 1.0} if name == "DDIMScheduler" else {}
    prev_sample = scheduler.step(x_t, scheduler.timesteps[0], x_t, generator=generator, **kwargs).prev_sample
    reference = torch.Generator().manual_seed(0)
    torch.randn(1, 3, 4, 4, generator=reference)  # the one draw of the step
    assert prev_sample.device.type == "meta"
    assert torch.equal(torch.randn(8, generator=generator), torch.randn(8, generator=reference))
