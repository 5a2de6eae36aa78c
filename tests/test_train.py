"""Training: the loss, EMA and learning-rate formulas on known numbers; a killed-then-resumed run equals an
uninterrupted one; old checkpoints and configs still load; the scheduler config is a function of the training config."""

import dataclasses
import json
import math
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from uncond.checkpoint import find_checkpoint, load_checkpoint, optimizer_to_tensors, save_checkpoint
from uncond.recipes import assign_noise, min_snr_weights, sample_timesteps
from uncond.scheduler import DDPMScheduler
from uncond.train import (
    TrainConfig,
    UnconditionalTask,
    diffusion_loss,
    draw_noise,
    main,
    mse_loss,
    noisy_inputs,
    scheduler_config,
    train,
)
from uncond.train_config import config_from_dict, load_config
from uncond.train_loop import batch_indices, build_lr_schedule, make_ema, step_generator
from uncond.unet import UNet, UNetConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_UNET = {
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "attention_resolutions": [4],
    "norm_num_groups": 4,
    "attention_head_dim": 8,
}
QUIET = dict(log=lambda *_: None)


class TinyDataset(torch.utils.data.Dataset):
    """Eight 8x8 images: solid colours, so nothing is read from disk."""

    def __init__(self):
        colours = torch.linspace(-1, 1, 8)
        self.images = torch.stack(
            [torch.stack([c.expand(8, 8), (-c).expand(8, 8), torch.zeros(8, 8)]) for c in colours]
        )
        self.captions = [f"colour {i}" for i in range(8)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"pixel_values": self.images[i], "text": self.captions[i], "index": i}


class Killed(Exception):
    pass


class KilledAt(UnconditionalTask):
    """Dies right after the checkpoint of step `kill_step` is written, as a killed process would; no sample grids."""

    def __init__(self, dataset, config, kill_step=None):
        super().__init__(dataset, config, log=lambda *_: None)
        self.kill_step = kill_step

    def save_model(self, out_dir, model, config):
        super().save_model(out_dir, model, config)
        state = json.load(open(os.path.join(out_dir, "checkpoint", "state.json")))
        if state["step"] == self.kill_step:
            raise Killed()

    def evaluate(self, *args):
        pass  # sampling is tested elsewhere; keep this test fast


def tiny_config(**overrides):
    values = dict(
        image_size=8,
        batch_size=4,
        max_steps=6,
        warmup_steps=2,
        checkpoint_every=2,
        sample_every=1000,
        log_every=1,
        unet=TINY_UNET,
        seed=3,
    )
    values.update(overrides)
    return TrainConfig(**values)


def tiny_unet(seed=0):
    torch.manual_seed(seed)
    return UNet(UNetConfig(sample_size=8, **TINY_UNET))


def run(out_dir, config=None, kill_step=None, resume=False, dataset=None):
    config = config or tiny_config()
    return train(
        "", str(out_dir), config, resume=resume, task=KilledAt(dataset or TinyDataset(), config, kill_step), **QUIET
    )


# ---- formulas on known numbers ----


def test_learning_rate_schedule_values():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    schedule = build_lr_schedule(optimizer, TrainConfig(warmup_steps=10, max_steps=110))
    lrs = []
    for _ in range(111):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    # linear warm-up from 0: step s < 10 gets 2 * s / 10; then 2 * 0.5 (1 + cos(pi (s - 10) / 100))
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(0.2) and lrs[5] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(2.0) and lrs[35] == pytest.approx(1 + math.cos(math.pi / 4))
    assert lrs[60] == pytest.approx(1.0) and lrs[110] == pytest.approx(0.0, abs=1e-12)
    # resuming at step 60 continues the same curve
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    optimizer.param_groups[0]["initial_lr"] = 2.0  # as a checkpoint's param_groups hold it
    build_lr_schedule(optimizer, TrainConfig(warmup_steps=10, max_steps=110), start_step=60)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.0)


def test_ema_step_equals_its_formula():
    weights = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        weights.weight.copy_(torch.tensor([[0.0, 4.0]]))
    ema = make_ema(weights, decay=0.999)
    with torch.no_grad():
        weights.weight.copy_(torch.tensor([[1.0, 2.0]]))
    ema.step(weights.parameters())  # the first update copies the weights: decay 0
    torch.testing.assert_close(ema.shadow_params[0], torch.tensor([[1.0, 2.0]]))
    with torch.no_grad():
        weights.weight.copy_(torch.tensor([[3.0, 0.0]]))
    ema.step(weights.parameters())  # update 2: d = (1 + 1) / (10 + 1); ema = d ema + (1 - d) w
    d = 2 / 11
    torch.testing.assert_close(ema.shadow_params[0], torch.tensor([[d * 1 + (1 - d) * 3, d * 2 + (1 - d) * 0]]))
    ema.optimization_step = 10_000  # late in a run (or resumed there): d = min(0.999, 10001 / 10010) = 0.999
    before = ema.shadow_params[0].clone()
    ema.step(weights.parameters())
    torch.testing.assert_close(ema.shadow_params[0], 0.999 * before + 0.001 * torch.tensor([[3.0, 0.0]]))


def test_noisy_inputs_and_loss_on_known_numbers():
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    alpha_bar = scheduler.alphas_cumprod[500].item()
    x_0, noise, t = torch.tensor([[1.0, -0.5]]), torch.tensor([[0.5, 2.0]]), torch.tensor([500])
    x_t, target = noisy_inputs(scheduler, x_0, noise, t, "epsilon")
    a, s = math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    torch.testing.assert_close(x_t, torch.tensor([[a * 1 + s * 0.5, a * -0.5 + s * 2.0]]))
    assert torch.equal(target, noise)
    _, v = noisy_inputs(scheduler, x_0, noise, t, "v_prediction")
    torch.testing.assert_close(v, torch.tensor([[a * 0.5 - s * 1.0, a * 2.0 - s * -0.5]]))
    assert mse_loss(torch.tensor([[0.2, 2.0]]), noise).item() == pytest.approx((0.3**2 + 0) / 2)


def test_loss_of_a_zero_model_is_the_mean_squared_noise():
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    x_0 = TinyDataset().images[:4]
    loss = diffusion_loss(
        lambda x_t, t: torch.zeros_like(x_t), scheduler, x_0, torch.Generator().manual_seed(5), "epsilon"
    )
    noise = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(5))  # drawn first, then the timesteps
    assert loss.item() == pytest.approx(noise.pow(2).mean().item(), rel=1e-6)


def test_draw_noise_draws_the_noise_then_uniform_timesteps():
    noise, timesteps = draw_noise((2000, 1, 1, 1), 4, torch.Generator().manual_seed(3))
    expected = torch.Generator().manual_seed(3)
    assert torch.equal(noise, torch.randn((2000, 1, 1, 1), generator=expected))
    assert torch.equal(timesteps, torch.randint(0, 4, (2000,), generator=expected))  # t ~ U{0, ..., T - 1}
    assert timesteps.min() == 0 and timesteps.max() == 3


def test_the_loss_is_float32_for_half_precision_outputs():
    # bfloat16 holds 0.3 as 0.30078125: the squared error must be taken after the cast to float32
    output, target = torch.tensor([[0.3, 2.0]], dtype=torch.bfloat16), torch.tensor([[0.0, 2.0]])
    loss = mse_loss(output, target.bfloat16())
    assert loss.dtype == torch.float32 and loss.item() == 0.30078125**2 / 2


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_diffusion_loss_is_the_mean_squared_error_to_the_target(prediction_type):
    scheduler = DDPMScheduler(num_train_timesteps=50, prediction_type=prediction_type)
    x_0 = TinyDataset().images[:4]
    seen = []

    def model(x_t, timesteps, scale):
        seen.append((x_t, timesteps))
        return scale * x_t

    loss = diffusion_loss(model, scheduler, x_0, torch.Generator().manual_seed(5), prediction_type, scale=0.5)
    noise, timesteps = draw_noise(x_0.shape, 50, torch.Generator().manual_seed(5))  # t in [0, 50), not [0, 1000)
    x_t, target = noisy_inputs(scheduler, x_0, noise, timesteps, prediction_type)
    assert torch.equal(seen[0][0], x_t) and torch.equal(seen[0][1], timesteps)
    assert loss.item() == pytest.approx((0.5 * x_t - target).pow(2).mean().item(), rel=1e-6)
    # on the data's device (meta stands in for a GPU): the CPU draws move there, for the UNet and the formulas
    devices = []
    meta_model = lambda x_t, timesteps: devices.append((x_t.device.type, timesteps.device.type)) or x_t  # noqa: E731
    x_0 = torch.zeros(2, 1, 2, 2, device="meta")
    loss = diffusion_loss(meta_model, scheduler, x_0, torch.Generator().manual_seed(5), prediction_type)
    assert devices == [("meta", "meta")] and loss.device.type == "meta"


def oracle(scheduler, x_0, prediction_type):
    """A model that knows x_0, so it can return the true noise (or v) of any x_t."""

    def model(x_t, timesteps, **_):
        alpha_bar = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        noise = (x_t - alpha_bar.sqrt() * x_0) / (1 - alpha_bar).sqrt()
        return noise if prediction_type == "epsilon" else alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x_0

    return model


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_an_oracle_model_has_zero_loss(prediction_type):
    config = tiny_config(prediction_type=prediction_type)
    task = UnconditionalTask(TinyDataset(), config)
    for step in range(3):
        batch = task.batch(step, slice(0, 4), "cpu")
        x_0 = torch.stack([TinyDataset().images[i] for i in task.pool[batch_indices(step, 8, 4, config.seed)]])
        assert torch.equal(batch["x_0"], x_0)
        assert task.loss(oracle(task.scheduler, x_0, prediction_type), batch).item() < 1e-10
        assert task.loss(lambda x_t, t: torch.zeros_like(x_t), batch).item() > 0.1


def test_batch_draws_are_a_function_of_seed_and_step():
    task = UnconditionalTask(TinyDataset(), tiny_config())
    first, again, other = (
        task.batch(2, slice(0, 4), "cpu"),
        task.batch(2, slice(0, 4), "cpu"),
        task.batch(3, slice(0, 4), "cpu"),
    )
    assert all(torch.equal(first[k], again[k]) for k in ("x_t", "timesteps", "target"))
    assert not torch.equal(first["target"], other["target"])
    # noise and timesteps come from the step's generator, for the whole global batch: ε first, then t
    generator = step_generator(3, 2)
    assert torch.equal(first["target"], torch.randn(4, 3, 8, 8, generator=generator))
    assert torch.equal(first["timesteps"], torch.randint(0, 1000, (4,), generator=generator))
    # a process's share is its slice of the same global draws
    half = task.batch(2, slice(2, 4), "cpu")
    assert torch.equal(half["x_t"], first["x_t"][2:]) and torch.equal(half["timesteps"], first["timesteps"][2:])


def test_recipes_change_the_draws_and_weights_as_their_modules_say():
    plain = UnconditionalTask(TinyDataset(), tiny_config()).batch(2, slice(0, 4), "cpu")
    assert plain["weights"] is None  # no weighting: the plain mean
    task = UnconditionalTask(TinyDataset(), tiny_config(timestep_sampling="laplace", loss_weighting="min_snr"))
    batch = task.batch(2, slice(0, 4), "cpu")
    generator = step_generator(3, 2)
    noise = torch.randn(4, 3, 8, 8, generator=generator)
    timesteps = sample_timesteps("laplace", 4, task.scheduler.alphas_cumprod, generator)
    assert torch.equal(batch["timesteps"], timesteps) and torch.equal(batch["target"], noise)
    torch.testing.assert_close(
        batch["weights"], min_snr_weights(task.scheduler.alphas_cumprod, timesteps, 5.0, "epsilon")
    )
    # the weighted loss: each item's mean squared error, weighted, then averaged
    output = torch.zeros_like(batch["target"])
    expected = (batch["target"].pow(2).flatten(1).mean(1) * batch["weights"]).mean()
    torch.testing.assert_close(mse_loss(output, batch["target"], batch["weights"]), expected)


def test_immiscible_batches_pair_the_same_noise_draws_by_least_distance():
    plain = UnconditionalTask(TinyDataset(), tiny_config()).batch(2, slice(0, 4), "cpu")
    assigned = UnconditionalTask(TinyDataset(), tiny_config(immiscible=True)).batch(2, slice(0, 4), "cpu")
    assert torch.equal(assigned["timesteps"], plain["timesteps"])
    assert sorted(assigned["target"].flatten(1).sum(1).tolist()) == sorted(plain["target"].flatten(1).sum(1).tolist())
    assert torch.equal(assigned["target"], assign_noise(plain["x_0"], plain["target"]))

    def distance(batch):
        return (batch["x_0"] - batch["target"]).pow(2).sum().item()

    assert distance(assigned) <= distance(plain)


def test_batch_indices_walk_seeded_epochs():
    first_epoch = torch.cat([batch_indices(step, 12, 4, seed=0) for step in range(3)])
    assert sorted(first_epoch.tolist()) == list(range(12))  # every item once per epoch
    assert torch.equal(batch_indices(1, 12, 4, seed=0), batch_indices(1, 12, 4, seed=0))
    assert not torch.equal(torch.cat([batch_indices(s, 12, 4, seed=0) for s in range(3, 6)]), first_epoch)


def test_tiny_model_overfits_one_batch():
    model = tiny_unet()
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    x_0 = TinyDataset().images[:4]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(120):
        # the same noise and timesteps every step: one batch to memorise
        loss = diffusion_loss(model, scheduler, x_0, torch.Generator().manual_seed(0), "epsilon")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])


# ---- the loop: exact resume, EMA and learning rate in a run ----


class WeightsRecorder(KilledAt):
    """Keeps a copy of the weights after every optimiser step."""

    def __init__(self, dataset, config):
        super().__init__(dataset, config)
        self.history = []

    def after_step(self, model):
        self.history.append({k: v.detach().clone() for k, v in model.named_parameters()})


def test_a_run_keeps_the_ema_and_learning_rate_of_the_formulas(tmp_path):
    config = tiny_config(max_steps=4, ema_decay=0.25, learning_rate=1e-3, warmup_steps=2)
    task = WeightsRecorder(TinyDataset(), config)
    train("", str(tmp_path), config, task=task, **QUIET)
    ema = load_file(tmp_path / "checkpoint" / "ema.safetensors")
    for name in task.history[0]:
        expected = task.history[0][name]  # update 1 copies the weights
        for n, weights in enumerate(task.history[1:], start=2):
            d = min(0.25, n / (9 + n))  # min(decay, (1 + k) / (10 + k)), k = n - 1
            expected = d * expected + (1 - d) * weights[name]
        torch.testing.assert_close(ema[name], expected, msg=name)
    rows = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    # the rate of the next step: warm-up s / 2 for s < 2, then cosine over the remaining 2 steps
    expected = [0.5e-3, 1e-3, 0.5e-3 * (1 + math.cos(math.pi / 2)), 0.0]
    assert [row["lr"] for row in rows] == pytest.approx(expected, abs=1e-12)


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path):
    run(tmp_path / "straight")
    with pytest.raises(Killed):
        run(tmp_path / "resumed", kill_step=4)
    assert json.load(open(tmp_path / "resumed" / "checkpoint" / "state.json"))["step"] == 4
    with open(tmp_path / "resumed" / "log.jsonl", "a") as f:  # as if killed after logging step 5, before its checkpoint
        f.write(json.dumps({"step": 5, "loss": 99.0}) + "\n")
    run(tmp_path / "resumed", resume=True)
    for name in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        straight = load_file(tmp_path / "straight" / "checkpoint" / name)
        resumed = load_file(tmp_path / "resumed" / "checkpoint" / name)
        assert straight.keys() == resumed.keys()
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), (name, key)
    # the run folder is a loadable model: the EMA weights
    model = UNet.from_pretrained(str(tmp_path / "resumed"))
    ema = load_file(tmp_path / "resumed" / "checkpoint" / "ema.safetensors")
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())
    # the log holds each step once, as the uninterrupted run's does
    straight_rows = [json.loads(line) for line in open(tmp_path / "straight" / "log.jsonl")]
    resumed_rows = [json.loads(line) for line in open(tmp_path / "resumed" / "log.jsonl")]
    assert [r["step"] for r in resumed_rows] == [r["step"] for r in straight_rows] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in resumed_rows] == [r["loss"] for r in straight_rows]


def test_a_resumed_run_continues_with_the_checkpoints_config(tmp_path):
    from uncond.train_config import resumed_config

    run(tmp_path, tiny_config(max_steps=2))
    asked = tiny_config(max_steps=9, learning_rate=1.0, seed=4)
    resumed = resumed_config(str(tmp_path), asked, resume=True)
    assert resumed == tiny_config(max_steps=9)  # only the length may change
    assert resumed_config(str(tmp_path), asked, resume=False) is asked


OLD_TRAIN_CONFIG = {  # the fields train_config.json had before the sampling defaults and lr_scheduler
    "image_size": 8,
    "batch_size": 4,
    "max_steps": 6,
    "learning_rate": 0.0003,
    "weight_decay": 0.0,
    "warmup_steps": 2,
    "ema_decay": 0.999,
    "grad_clip": 1.0,
    "prediction_type": "epsilon",
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "random_flip": False,
    "mixed_precision": "no",
    "gradient_accumulation_steps": 1,
    "checkpoint_every": 2,
    "sample_every": 1000,
    "num_sample_images": 16,
    "seed": 3,
    "balance_variants": False,
    "init_from": "",
    "unet": TINY_UNET,
}


def write_old_checkpoint(out_dir, step):
    """A checkpoint laid out as the trainer of before the shared loop wrote it (same files, same state.json keys)."""
    model = tiny_unet(seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)  # sets the groups' initial_lr
    model(torch.zeros(1, 3, 8, 8), torch.tensor([0])).sum().backward()
    optimizer.step()
    scheduler.step()
    folder = out_dir / "checkpoint"
    folder.mkdir(parents=True)
    save_file(model.state_dict(), folder / "model.safetensors")
    save_file({k: v + 1 for k, v in model.state_dict().items()}, folder / "ema.safetensors")
    tensors, meta = optimizer_to_tensors(optimizer)
    save_file(tensors, folder / "optimizer.safetensors")
    state = {"step": step, "optimizer": meta, "train_config": OLD_TRAIN_CONFIG}
    (folder / "state.json").write_text(json.dumps(state))
    return model


def test_an_old_checkpoint_resumes(tmp_path):
    write_old_checkpoint(tmp_path, step=4)
    resumed = WeightsRecorder(TinyDataset(), config_from_dict(TrainConfig, OLD_TRAIN_CONFIG))
    train("", str(tmp_path), tiny_config(), resume=True, task=resumed, **QUIET)
    assert len(resumed.history) == 2  # steps 5 and 6
    state = json.load(open(tmp_path / "checkpoint" / "state.json"))
    assert state["step"] == 6 and state["train_config"]["timestep_spacing"] == "leading"
    assert state["train_config"]["clip_sample_range"] == 1.0 and state["train_config"]["lr_scheduler"] == "cosine"
    # the EMA went on from the old EMA weights (+1) with decays min(0.999, (1 + s) / (10 + s)) at steps s = 4, 5
    old_ema = {k: v + 1 for k, v in tiny_unet(seed=1).state_dict().items()}
    ema = load_file(tmp_path / "checkpoint" / "ema.safetensors")
    name = "conv_in.weight"
    expected = old_ema[name]
    for s, weights in zip((4, 5), resumed.history):
        d = (1 + s) / (10 + s)
        expected = d * expected + (1 - d) * weights[name]
    torch.testing.assert_close(ema[name], expected)


def test_an_old_train_config_reads_with_defaults(tmp_path):
    (tmp_path / "train_config.json").write_text(json.dumps(OLD_TRAIN_CONFIG))
    config = load_config(str(tmp_path / "train_config.json"), TrainConfig)
    assert (config.clip_sample, config.clip_sample_range, config.timestep_spacing) == (True, 1.0, "leading")
    assert scheduler_config(config)["clip_sample_range"] == 1.0
    with pytest.raises(ValueError, match="unknown fields.*'sampler'"):
        config_from_dict(TrainConfig, {**OLD_TRAIN_CONFIG, "sampler": "ddim"})


@pytest.mark.parametrize(
    "name, config_class", [("uncond", "uncond.train:TrainConfig"), ("txt2img", "txt2img.train:TextToImageTrainConfig")]
)
def test_shipped_scheduler_config_is_written_by_training(name, config_class):
    import importlib

    module, class_name = config_class.split(":")
    folder = os.path.join(ROOT, "weights", name)
    config = load_config(
        os.path.join(folder, "train_config.json"), getattr(importlib.import_module(module), class_name)
    )
    with open(os.path.join(folder, "scheduler_config.json")) as f:
        shipped = f.read()
    assert json.loads(shipped) == scheduler_config(config)
    assert shipped.strip() == json.dumps(scheduler_config(config), indent=2)  # the same file, key order included


def test_the_model_folder_holds_the_scheduler_config_of_the_training_config(tmp_path):
    config = tiny_config(
        max_steps=2, clip_sample_range=3.0, timestep_spacing="trailing", prediction_type="v_prediction"
    )
    run(tmp_path, config)
    written = json.load(open(tmp_path / "scheduler_config.json"))
    assert written == scheduler_config(config)
    assert (written["clip_sample_range"], written["timestep_spacing"], written["prediction_type"]) == (
        3.0,
        "trailing",
        "v_prediction",
    )
    assert load_config(str(tmp_path / "train_config.json"), TrainConfig) == config


def test_interrupted_checkpoint_swap_still_loads(tmp_path):
    model = tiny_unet()
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(str(tmp_path), {"model": model}, optimizer, {"step": 7})
    # a crash between the two renames leaves only checkpoint.old: it is still found
    os.replace(tmp_path / "checkpoint", tmp_path / "checkpoint.old")
    os.makedirs(tmp_path / "checkpoint.tmp")  # and a half-written temporary folder is ignored
    assert find_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint.old")


def test_killed_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    import uncond.checkpoint

    model = tiny_unet()
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(str(tmp_path), {"model": model, "ema": model}, optimizer, {"step": 7})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    real_save_file = uncond.checkpoint.save_file

    def killed_mid_file(tensors, path):  # half of the second file reaches the disk, then the process dies
        if path.endswith("ema.safetensors"):
            real_save_file(tensors, path)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            raise Killed()
        real_save_file(tensors, path)

    monkeypatch.setattr(uncond.checkpoint, "save_file", killed_mid_file)
    with pytest.raises(Killed):
        save_checkpoint(str(tmp_path), {"model": model, "ema": model}, optimizer, {"step": 9})
    # the half-written step 9 stays in checkpoint.tmp; resuming finds and loads step 7, exactly as it was saved
    assert find_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint")
    fresh = tiny_unet(seed=5)
    state = load_checkpoint(str(tmp_path / "checkpoint"), {"model": fresh}, torch.optim.AdamW(fresh.parameters()))
    assert state["step"] == 7
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())


def test_bad_config_raises():
    for bad, name in [
        (dict(prediction_type="noise"), "prediction_type"),
        (dict(mixed_precision="fp8"), "mixed_precision"),
        (dict(batch_size=0), "batch_size"),
        (dict(timestep_spacing="even"), "timestep_spacing"),
        (dict(clip_sample_range=0), "clip_sample_range"),
        (dict(lr_scheduler="step"), "lr_scheduler"),
        (dict(ema_decay=1.0), "ema_decay"),
        (dict(loss_weighting="p2"), "loss_weighting"),
        (dict(snr_gamma=0), "snr_gamma"),
        (dict(timestep_sampling="cosine"), "timestep_sampling"),
    ]:
        with pytest.raises(ValueError, match=name):
            TrainConfig(**bad)


@pytest.mark.slow
def test_command_line_trains_on_an_image_folder(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    with open(data / "metadata.jsonl", "w") as f:
        for i, colour in enumerate(["red", "blue", "green", "yellow"]):
            Image.new("RGB", (16, 16), colour).save(data / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "text": colour}) + "\n")
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"image_size": 8, "batch_size": 4, "warmup_steps": 1, "num_sample_images": 2, "unet": TINY_UNET})
    )
    flags = ["--max-steps", "2", "--timestep-spacing", "trailing", "--random-flip"]
    main(["--data", str(data), "--out", str(tmp_path / "run"), "--config", str(config), *flags])
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "samples" / "step_0000002.png").is_file()
    saved = json.load(open(tmp_path / "run" / "train_config.json"))
    assert saved["max_steps"] == 2 and saved["unet"]["block_out_channels"] == [8, 16] and saved["random_flip"]
    assert json.load(open(tmp_path / "run" / "scheduler_config.json"))["timestep_spacing"] == "trailing"


def test_init_from_a_model_folder_starts_from_its_weights(tmp_path):
    run(tmp_path / "first", tiny_config(max_steps=2))
    first = UNet.from_pretrained(str(tmp_path / "first"))
    config = tiny_config(max_steps=1, learning_rate=1e-12, warmup_steps=1, init_from=str(tmp_path / "first"))
    run(tmp_path / "second", config)
    second = UNet.from_pretrained(str(tmp_path / "second"))
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


class RecordingTask(KilledAt):
    """Records the data indices of every batch."""

    def __init__(self, dataset, config):
        super().__init__(dataset, config)
        self.drawn = []

    def model_kwargs(self, step, indices, generator, part, device):
        self.drawn.extend(int(i) for i in indices)
        return super().model_kwargs(step, indices, generator, part, device)


def test_balance_variants_repeats_the_single_emoji_in_each_epoch(tmp_path):
    from uncond.data import SKIN_TONES

    dataset = TinyDataset()
    # one emoji with six variants, two without: repeat factors 1 and round(sqrt(6)) = 2, an epoch of 6 + 2 * 2 = 10
    dataset.captions = ["waving hand"] + [f"waving hand: {tone}" for tone in SKIN_TONES] + ["pizza", "rocket"]
    config = tiny_config(max_steps=3, batch_size=10, balance_variants=True)
    task = RecordingTask(dataset, config)
    train("", str(tmp_path / "run"), config, task=task, **QUIET)
    assert [task.drawn.count(i) for i in range(8)] == [3, 3, 3, 3, 3, 3, 6, 6]

    config = tiny_config(max_steps=2, batch_size=8)
    plain = RecordingTask(dataset, config)
    train("", str(tmp_path / "plain"), config, task=plain, **QUIET)
    assert [plain.drawn.count(i) for i in range(8)] == [2] * 8


@pytest.mark.slow
def test_two_processes_train_the_weights_of_one_at_the_same_global_batch(tmp_path):
    import subprocess
    import sys

    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    with open(data / "metadata.jsonl", "w") as f:
        for i, colour in enumerate(["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]):
            Image.new("RGB", (8, 8), colour).save(data / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "text": colour}) + "\n")
    config = tiny_config(max_steps=3, warmup_steps=1, checkpoint_every=3, seed=1)
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    train(str(data), str(tmp_path / "one"), config, **QUIET)
    # accelerate's CPU data parallelism: two gloo processes (`accelerate launch --cpu` alone starts one process)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "uncond.train", "--data", str(data)]
    command += ["--out", str(tmp_path / "two"), "--config", str(tmp_path / "config.json")]
    done = subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 process(es)" in done.stdout
    for name in ("model.safetensors", "ema.safetensors"):
        one = load_file(tmp_path / "one" / "checkpoint" / name)
        two = load_file(tmp_path / "two" / "checkpoint" / name)
        for key in one:  # equal but for the order of float sums (the gradient all-reduce): 1e-6 of a weight's size
            torch.testing.assert_close(two[key], one[key], rtol=0, atol=5e-5, msg=f"{name} {key}")


def test_the_ema_model_evaluated_in_training_computes_with_the_ema_weights():
    """The sample grids run the EMA copy in eval mode: its packed convolutions must see the copied weights."""
    from diffusers.training_utils import EMAModel

    from uncond.train_loop import copy_ema_weights

    model = tiny_unet(seed=0).eval()
    ema_model = tiny_unet(seed=1).requires_grad_(False).eval()  # packed for its own weights
    ema = EMAModel(model.parameters(), decay=0.9, foreach=True)  # its average starts at model's weights
    copy_ema_weights(ema, ema_model)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(ema_model.eval()(x, 10), model(x, 10))


def test_bf16_training_on_a_cpu_takes_the_math_attention_backend():
    from uncond.train_loop import training_attention

    with training_attention(torch.device("cpu"), "bf16"):
        assert torch.backends.cuda.math_sdp_enabled() and not torch.backends.cuda.flash_sdp_enabled()
    assert torch.backends.cuda.flash_sdp_enabled()  # restored after
    for device, precision in (("cpu", "no"), ("cuda", "bf16")):
        with training_attention(torch.device(device), precision):
            assert torch.backends.cuda.flash_sdp_enabled()
