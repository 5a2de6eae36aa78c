"""RePaint's schedule is diffusers' RePaintScheduler's; the hook pastes the known region and jumps back up."""

import pytest
import torch
from diffusers import RePaintScheduler

from uncond.repaint import RePaintHook, check_jumps, paste, repaint_positions
from uncond.sampling import make_scheduler

SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}


@pytest.mark.parametrize("n, jump_length, jump_n_sample", [(50, 10, 10), (50, 10, 3), (20, 5, 2), (7, 10, 3),
                                                           (10, 1, 4), (25, 3, 1)])  # fmt: skip
def test_the_schedule_is_diffusers_repaint_schedule(n, jump_length, jump_n_sample):
    reference = RePaintScheduler(num_train_timesteps=1000)
    reference.set_timesteps(n, jump_length=jump_length, jump_n_sample=jump_n_sample)
    # diffusers' list holds the down steps (a model call each) and the up moves (re-noising): keep the down steps
    down, last = [], int(reference.timesteps[0]) + 1
    for t in reference.timesteps.tolist():
        if t < last:
            down.append(t)
        last = t
    scheduler = make_scheduler("ddpm", SCHEDULE)  # leading spacing: timesteps[p] = (n - 1 - p) * (1000 // n)
    scheduler.set_timesteps(n)
    ours = [int(scheduler.timesteps[p]) for p in repaint_positions(n, jump_length, jump_n_sample)]
    assert ours == down


def test_the_number_of_model_calls():
    assert len(repaint_positions(50, 10, 1)) == 50  # no resampling: each step once
    assert len(repaint_positions(50, 10, 10)) == 50 + 4 * 9 * 10  # jumps at 0, 10, 20, 30; 9 times each
    assert len(repaint_positions(50, 10, 3)) == 130


def test_the_hook_pastes_the_picture_at_the_level_the_step_landed_on_and_jumps_back():
    scheduler = make_scheduler("ddpm", SCHEDULE)
    scheduler.set_timesteps(10)
    t = scheduler.timesteps.tolist()
    x_0 = torch.full((1, 3, 4, 4), 0.5)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1  # fill the top half
    run = [t[0], t[1], t[0], t[1], t[2]]  # one jump back after the second step
    hook = RePaintHook(scheduler, x_0, mask, run, torch.Generator().manual_seed(0))
    prev = torch.full((1, 3, 4, 4), 3.0)
    out = hook(0, t[0], prev)  # landed on t[1], the next step is at t[1]: paste only
    assert torch.equal(out[..., :2, :], prev[..., :2, :])
    a = float(scheduler.alphas_cumprod[t[1]])
    known = out[..., 2:, :]
    assert not torch.equal(known, x_0[..., 2:, :])  # noised to t[1]'s level
    generator = torch.Generator().manual_seed(0)
    expected = a**0.5 * 0.5 + (1 - a) ** 0.5 * torch.randn((1, 3, 4, 4), generator=generator)[..., 2:, :]
    assert torch.allclose(known, expected)
    jumped = hook(1, t[1], prev)  # landed on t[2], the next step is at t[0]: pasted, then noised up
    assert not torch.equal(jumped[..., :2, :], prev[..., :2, :])
    last = hook(4, t[2], prev)  # not the last step of DDPM, but a last step of the run: pasted at t[3]
    final = RePaintHook(scheduler, x_0, mask, [t[9]])(0, t[9], prev)  # the step to x_0: the picture itself
    assert torch.equal(final[..., 2:, :], x_0[..., 2:, :]) and torch.equal(final[..., :2, :], prev[..., :2, :])
    assert last.shape == prev.shape


def test_the_final_paste_keeps_the_picture_exactly_where_the_mask_is_0():
    x, x_0 = torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    mask = (torch.rand(1, 1, 4, 4) > 0.5).float()
    out = paste(x, x_0, mask)
    keep = mask.expand_as(x) == 0
    assert torch.equal(out[keep], x_0[keep]) and torch.equal(out[~keep], x[~keep])


@pytest.mark.parametrize("jump_length, jump_n_sample, argument", [(0, 2, "jump_length"), (5, 0, "jump_n_sample"),
                                                                  (2.5, 2, "jump_length"), (5, 101, "jump_n_sample")])  # fmt: skip
def test_bad_jumps_name_the_argument(jump_length, jump_n_sample, argument):
    with pytest.raises(ValueError, match=argument):
        check_jumps(jump_length, jump_n_sample)
