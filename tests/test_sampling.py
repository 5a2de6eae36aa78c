"""The one denoising loop: it is the textbook loop for any scheduler, streams its steps, stops when asked, and an
oracle model that knows x_0 leads it back to x_0."""

import diffusers
import pytest
import torch
from default_dtype import default_dtype

from uncond.sampling import (
    SHARED_SCHEDULE_KEYS,
    Step,
    denoise,
    initial_noise,
    make_scheduler,
    model_dtype,
    sample,
    sample_dtype,
    step_kwargs,
    unet_model_fn,
)

SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "clip_sample": False}


def toy_model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for a UNet: depends on both x_t and t."""
    return torch.tanh(x_t) * (t.float() / 1000.0) + 0.1


def textbook_loop(scheduler, x_t, generator, **kwargs):
    """diffusers' documented loop, written out."""
    x_t = x_t * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_output = toy_model(scheduler.scale_model_input(x_t, t), t)
        x_t = scheduler.step(model_output, t, x_t, generator=generator, **kwargs).prev_sample
    return x_t


@pytest.mark.parametrize("name, options", [("ddpm", {}), ("ddim", {"eta": 0.0}), ("ddim", {"eta": 1.0}),
                                           ("dpm++", {}), ("euler", {})])  # fmt: skip
def test_the_loop_is_the_textbook_loop(name, options):
    results = []
    for loop in ("ours", "textbook"):
        scheduler = make_scheduler(name, SCHEDULE)
        scheduler.set_timesteps(6)
        x_t, generator = initial_noise((2, 3, 4, 4), seed=1, device="cpu")
        if loop == "ours":
            results.append(sample(toy_model, scheduler, x_t, generator, **options)[0])
        else:
            results.append(textbook_loop(scheduler, x_t, generator, **options))
    assert torch.equal(results[0], results[1])


def test_step_options_go_only_to_schedulers_that_take_them():
    ddim, ddpm = make_scheduler("ddim", SCHEDULE), make_scheduler("ddpm", SCHEDULE)
    euler = make_scheduler("euler", SCHEDULE)
    options = dict(eta=0.5, generator=None, use_clipped_model_output=True)
    assert step_kwargs(ddim, **options) == options
    assert step_kwargs(ddpm, **options) == {"generator": None}
    assert step_kwargs(euler, **options) == {"generator": None}
    assert isinstance(euler, diffusers.EulerDiscreteScheduler)


def test_steps_stream_and_the_return_value_is_x_0():
    scheduler = make_scheduler("ddim", SCHEDULE)
    scheduler.set_timesteps(4)
    x_t, generator = initial_noise((1, 3, 4, 4), seed=0, device="cpu")
    stream = denoise(toy_model, scheduler, x_t, generator)
    steps = []
    while True:
        try:
            steps.append(next(stream))
        except StopIteration as done:
            x_0, steps_done = done.value
            break
    assert [s.index for s in steps] == [0, 1, 2, 3] and steps_done == 4
    assert [s.timestep for s in steps] == scheduler.timesteps.tolist()
    assert all(isinstance(s, Step) and s.x_t.shape == (1, 3, 4, 4) for s in steps)
    assert torch.equal(x_0, steps[-1].x_t)


def test_a_callback_stops_after_its_step_with_the_estimate_of_x_0():
    scheduler = make_scheduler("ddim", SCHEDULE)
    scheduler.set_timesteps(10)
    x_t, generator = initial_noise((1, 3, 4, 4), seed=0, device="cpu")
    seen = []
    x_0, steps_done = sample(
        toy_model, scheduler, x_t, generator, callback=lambda i, t, x, x0: seen.append(i) or i == 2
    )
    assert seen == [0, 1, 2] and steps_done == 3
    scheduler.set_timesteps(10)
    third = list(denoise(toy_model, scheduler, x_t, generator))[2]
    assert torch.equal(x_0, third.pred_original_sample)


def test_closing_the_stream_stops_the_model_calls():
    calls = []

    def counting_model(x_t, t):
        calls.append(int(t))
        return toy_model(x_t, t)

    scheduler = make_scheduler("ddpm", SCHEDULE)
    scheduler.set_timesteps(100)
    x_t, generator = initial_noise((1, 3, 4, 4), seed=0, device="cpu")
    stream = denoise(counting_model, scheduler, x_t, generator)
    next(stream), next(stream)
    stream.close()  # what Stop does to the app's handler
    assert len(calls) == 2


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_an_oracle_model_leads_deterministic_ddim_back_to_its_x_0(prediction_type):
    # x_T = sqrt(a_T) x_0 + sqrt(1 - a_T) eps; a model that answers with the true eps (or v, or x_0) of that
    # trajectory keeps DDIM eta 0 on it (Song et al. 2021 eq. 12), so the loop must end at x_0 itself
    config = {**SCHEDULE, "prediction_type": prediction_type, "set_alpha_to_one": True}
    scheduler = make_scheduler("ddim", config)
    scheduler.set_timesteps(20)
    x_0 = torch.rand(2, 3, 4, 4) * 2 - 1
    eps = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    alphas_cumprod = scheduler.alphas_cumprod

    def oracle(x_t, t):
        a = alphas_cumprod[int(t)]
        noise = (x_t - a.sqrt() * x_0) / (1 - a).sqrt()
        if prediction_type == "epsilon":
            return noise
        if prediction_type == "v_prediction":
            return a.sqrt() * noise - (1 - a).sqrt() * x_0
        return x_0

    t_first = scheduler.timesteps[0]
    x_t = alphas_cumprod[t_first].sqrt() * x_0 + (1 - alphas_cumprod[t_first]).sqrt() * eps
    result, _ = sample(oracle, scheduler, x_t, None, eta=0.0)
    torch.testing.assert_close(result, x_0, atol=1e-4, rtol=0)


def test_the_unet_model_fn_casts_to_the_unets_dtype_and_back():
    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros((), dtype=torch.bfloat16))
            self.seen = None

        def forward(self, sample, timestep):
            self.seen = sample.dtype
            return sample * 2

    probe = Probe()
    out = unet_model_fn(probe)(torch.ones(1, 3, 2, 2), torch.tensor(3))
    assert probe.seen == torch.bfloat16 and out.dtype == torch.float32 and out.flatten()[0] == 2.0


def test_the_starting_noise_is_the_seeds_on_any_device():
    a, _ = initial_noise((2, 3, 4, 4), seed=7, device="cpu")
    b = torch.randn((2, 3, 4, 4), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_a_diffusers_sampler_gets_every_shared_training_setting_and_nothing_else():
    config = {"num_train_timesteps": 500, "beta_start": 0.001, "beta_end": 0.03, "beta_schedule": "linear",
              "prediction_type": "v_prediction", "timestep_spacing": "trailing", "steps_offset": 1,
              "clip_sample": True, "variance_type": "fixed_small"}  # fmt: skip
    for name in ("dpm++", "euler"):
        scheduler = make_scheduler(name, config)
        assert {key: scheduler.config[key] for key in SHARED_SCHEDULE_KEYS} == {
            key: config[key] for key in SHARED_SCHEDULE_KEYS
        }
    # our DDPM's variance_type means something else to DPM-Solver++ ("learned" outputs), so it must not reach it
    assert make_scheduler("dpm++", config).config["variance_type"] is None
    ours = make_scheduler("ddpm", config)
    assert ours.config["variance_type"] == "fixed_small" and ours.config["num_train_timesteps"] == 500
    with pytest.raises(ValueError) as error:
        make_scheduler("heun", config)
    assert str(error.value) == "scheduler must be one of ['ddim', 'ddpm', 'dpm++', 'euler'], got 'heun'"


def test_each_step_reports_the_schedulers_estimate_of_x_0():
    scheduler = make_scheduler("ddim", SCHEDULE)
    scheduler.set_timesteps(5)
    x_t, generator = initial_noise((1, 3, 4, 4), seed=2, device="cpu")
    steps = list(denoise(toy_model, scheduler, x_t, generator))
    for step in steps:  # DDIM eq. 12's x_0 estimate of this step, recomputed from x_t before it
        out = scheduler.step(toy_model(x_t, torch.tensor(step.timestep)), step.timestep, x_t)
        assert torch.equal(step.x_t, out.prev_sample) and torch.equal(
            step.pred_original_sample, out.pred_original_sample
        )
        x_t = out.prev_sample
    # not the sample itself, but at the last step (alpha_cumprod of the step after it is 1: x_{t-1} = x_0)
    assert not any(torch.equal(s.pred_original_sample, s.x_t) for s in steps[:-1])
    # DPM-Solver++ reports no estimate: the sample itself stands in
    scheduler = make_scheduler("dpm++", SCHEDULE)
    scheduler.set_timesteps(3)
    assert all(
        s.pred_original_sample is s.x_t for s in denoise(toy_model, scheduler, *initial_noise((1, 3, 4, 4), 2, "cpu"))
    )


def test_the_callback_sees_each_step_as_the_stream_yields_it():
    seen = []
    scheduler = make_scheduler("ddim", SCHEDULE)
    scheduler.set_timesteps(4)
    x_t, generator = initial_noise((1, 3, 4, 4), seed=0, device="cpu")
    stream = denoise(toy_model, scheduler, x_t, generator, callback=lambda *args: seen.append(args))
    steps = list(stream)
    assert (
        [(i, t) for i, t, _, _ in seen]
        == [(s.index, s.timestep) for s in steps]
        == list(enumerate(scheduler.timesteps.tolist()))
    )
    assert all(x is s.x_t and x0 is s.pred_original_sample for (_, _, x, x0), s in zip(seen, steps, strict=True))


def test_the_loop_runs_in_inference_mode_and_the_caller_between_steps_does_not():
    modes = []

    def probe(x_t, t):
        modes.append(torch.is_inference_mode_enabled())
        return toy_model(x_t, t)

    scheduler = make_scheduler("ddpm", SCHEDULE)
    scheduler.set_timesteps(3)
    for _ in denoise(probe, scheduler, *initial_noise((1, 3, 4, 4), 0, "cpu")):
        modes.append(torch.is_inference_mode_enabled())
    assert modes == [True, False] * 3


def test_model_dtype_is_the_first_parameters_or_the_default():
    assert model_dtype(torch.nn.Linear(2, 2).double(), torch.float32) == torch.float64
    assert model_dtype(torch.nn.ReLU(), torch.bfloat16) == torch.bfloat16


def test_the_starting_noise_comes_in_the_asked_dtype_drawn_in_float32_or_float64():
    x_t, generator = initial_noise((2, 3), seed=5, device="cpu", dtype=torch.float16)
    expected_generator = torch.Generator().manual_seed(5)
    assert x_t.dtype == torch.float16
    assert torch.equal(x_t, torch.randn((2, 3), generator=expected_generator).half())  # the float32 run's noise
    # the generator goes on where x_T ended (DDPM's per-step noise)
    assert torch.equal(torch.randn(4, generator=generator), torch.randn(4, generator=expected_generator))
    # float64 is drawn in float64 (float32's draw differs in the last bit between CPU kernels)
    x_t, generator = initial_noise((2, 3), seed=5, device="cpu", dtype=torch.float64)
    expected_generator = torch.Generator().manual_seed(5)
    assert x_t.dtype == torch.float64
    assert torch.equal(x_t, torch.randn((2, 3), generator=expected_generator, dtype=torch.float64))
    # the generator goes on where x_T ended (DDPM's per-step noise)
    assert torch.equal(torch.randn(4, generator=generator), torch.randn(4, generator=expected_generator))


def test_the_loop_runs_in_float32_except_for_a_float64_unet():
    assert sample_dtype(torch.nn.Linear(2, 2)) == torch.float32
    assert sample_dtype(torch.nn.Linear(2, 2).half()) == torch.float32  # half-precision UNets: x_t stays float32
    assert sample_dtype(torch.nn.ReLU()) == torch.float32
    assert sample_dtype(torch.nn.Linear(2, 2).double()) == torch.float64


def test_a_model_without_parameters_computes_in_float32():
    seen = []

    class Doubler(torch.nn.Module):
        def forward(self, sample, timestep):
            seen.append(sample.dtype)
            return sample * 2

    out = unet_model_fn(Doubler())(torch.ones(1, 1, 2, 2, dtype=torch.float64), torch.tensor(0))
    assert seen == [torch.float32] and out.dtype == torch.float64 and out.sum() == 8.0


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_the_loop_keeps_x_t_and_t_on_the_samples_device(name):
    # the meta device stands in for a GPU: a tensor left on the CPU shows, without one
    seen = []

    def probe(x_t, t):
        seen.append((x_t.device.type, t.device.type))
        return x_t

    scheduler = make_scheduler(name, SCHEDULE)
    scheduler.set_timesteps(3)
    x_0, _ = sample(probe, scheduler, torch.zeros(1, 1, 2, 2, device="meta"), torch.Generator().manual_seed(0))
    assert seen == [("meta", "meta")] * 3 and x_0.device.type == "meta"


def test_the_starting_noise_goes_to_the_device_and_is_float32_whatever_the_default_dtype():
    assert initial_noise((1, 2), seed=0, device="meta")[0].device.type == "meta"  # meta: a GPU's stand-in
    with default_dtype(torch.float64):  # a caller's setting must not change the seed's numbers
        x_t, _ = initial_noise((2, 3), seed=5, device="cpu")
        x_t_64, _ = initial_noise((2, 3), seed=5, device="cpu", dtype=torch.float64)
    expected = torch.randn((2, 3), generator=torch.Generator().manual_seed(5), dtype=torch.float32)
    assert x_t.dtype == torch.float32 and torch.equal(x_t, expected)
    expected_64 = torch.randn((2, 3), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.equal(x_t_64, expected_64)


@pytest.mark.parametrize("name", ["ddim", "euler"])
def test_a_run_from_a_tail_of_the_timesteps_takes_x_t_as_it_is(name):
    # image to image starts part-way: the textbook loop over the tail, without the init_noise_sigma scaling
    scheduler = make_scheduler(name, SCHEDULE)
    scheduler.set_timesteps(8)
    tail = scheduler.timesteps[3:]
    x_t = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    expected = x_t
    for t in tail:
        expected = scheduler.step(toy_model(scheduler.scale_model_input(expected, t), t), t, expected).prev_sample
    scheduler.set_timesteps(8)
    steps = list(denoise(toy_model, scheduler, x_t, timesteps=tail))
    assert [s.timestep for s in steps] == [int(t) for t in tail]
    assert torch.equal(steps[-1].x_t, expected)
    scheduler.set_timesteps(8)
    full = sample(toy_model, scheduler, x_t, timesteps=scheduler.timesteps)  # the whole list: the plain loop
    scheduler.set_timesteps(8)
    assert torch.equal(full[0], sample(toy_model, scheduler, x_t)[0])


def test_a_hook_changes_the_sample_the_next_step_and_the_stream_see():
    scheduler = make_scheduler("ddim", SCHEDULE)
    scheduler.set_timesteps(4)
    x_t = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    seen_by_model = []

    def model(x, t):
        seen_by_model.append(x.clone())
        return toy_model(x, t)

    calls = []

    def hook(i, t, prev_sample):
        calls.append((i, t))
        return torch.zeros_like(prev_sample)

    steps = list(denoise(model, scheduler, x_t, hook=hook))
    assert calls == [(i, int(t)) for i, t in enumerate(scheduler.timesteps)]
    assert all(torch.equal(s.x_t, torch.zeros(1, 3, 4, 4)) for s in steps)
    assert all(torch.equal(x, torch.zeros(1, 3, 4, 4)) for x in seen_by_model[1:])


def test_a_run_may_revisit_timesteps():
    # RePaint's jumps: a timestep stepped from twice gets the same coefficients both times
    scheduler = make_scheduler("ddim", SCHEDULE)
    scheduler.set_timesteps(5)
    t = scheduler.timesteps
    run = torch.stack([t[0], t[1], t[1], t[2]])
    x_t = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    steps = list(denoise(toy_model, scheduler, x_t, timesteps=run))
    assert [s.timestep for s in steps] == [int(v) for v in run]
    again = scheduler.step(toy_model(steps[0].x_t, t[1]), t[1], steps[0].x_t).prev_sample
    assert torch.equal(steps[1].x_t, again)


def test_make_scheduler_takes_the_options_its_scheduler_has_and_refuses_others_by_name():
    ddim = make_scheduler("ddim", SCHEDULE, thresholding=True, dynamic_thresholding_ratio=0.9)
    assert ddim.config.thresholding is True and ddim.config.dynamic_thresholding_ratio == 0.9
    with pytest.raises(ValueError, match="^thresholding is not available with the euler scheduler$"):
        make_scheduler("euler", SCHEDULE, thresholding=True)  # diffusers' Euler has no thresholding
