"""The one denoising loop: it is the textbook loop for any scheduler, streams its steps, stops when asked, and an
oracle model that knows x_0 leads it back to x_0."""

import diffusers
import pytest
import torch

from uncond.sampling import (
    Step,
    denoise,
    initial_noise,
    make_scheduler,
    sample,
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
