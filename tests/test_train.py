"""Training: the loss falls on one batch, and a killed-then-resumed run equals an uninterrupted one."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from uncond.scheduler import DDPMScheduler
from uncond.train import (
    TrainConfig,
    UnconditionalTask,
    batch_indices,
    diffusion_loss,
    find_checkpoint,
    learning_rate_factor,
    load_checkpoint,
    main,
    save_checkpoint,
    train,
)
from uncond.unet import UNet, UNetConfig

TINY_UNET = {
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "attention_resolutions": [4],
    "norm_num_groups": 4,
    "attention_head_dim": 8,
}


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
    """Dies right after the checkpoint of step `kill_step` is written, as a killed process would."""

    def __init__(self, dataset, kill_step):
        super().__init__(dataset)
        self.kill_step = kill_step

    def save_model(self, out_dir, ema_model, scheduler, config):
        super().save_model(out_dir, ema_model, scheduler, config)
        state = json.load(open(os.path.join(out_dir, "checkpoint", "state.json")))
        if state["step"] == self.kill_step:
            raise Killed()

    def save_samples(self, *args):
        pass  # sampling is tested elsewhere; keep this test fast


def tiny_config(**overrides):
    values = dict(
        image_size=8,
        batch_size=4,
        max_steps=6,
        warmup_steps=2,
        checkpoint_every=2,
        sample_every=1000,
        unet=TINY_UNET,
        seed=3,
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_learning_rate_schedule():
    assert learning_rate_factor(0, 10, 100) == pytest.approx(0.1)
    assert learning_rate_factor(9, 10, 100) == pytest.approx(1.0)
    assert learning_rate_factor(55, 10, 100) == pytest.approx(0.5)
    assert learning_rate_factor(100, 10, 100) == pytest.approx(0.0)


def test_batch_indices_walk_seeded_epochs():
    first_epoch = torch.cat([batch_indices(step, 12, 4, seed=0) for step in range(3)])
    assert sorted(first_epoch.tolist()) == list(range(12))  # every item once per epoch
    assert torch.equal(batch_indices(1, 12, 4, seed=0), batch_indices(1, 12, 4, seed=0))
    assert not torch.equal(torch.cat([batch_indices(s, 12, 4, seed=0) for s in range(3, 6)]), first_epoch)


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = UNet(UNetConfig(sample_size=8, **TINY_UNET))
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    x_0 = TinyDataset().images[:4]
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(300):
        # the same noise and timesteps every step: one batch to memorise
        loss = diffusion_loss(model, scheduler, x_0, torch.Generator().manual_seed(0), "epsilon")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path):
    dataset = TinyDataset()
    train("", str(tmp_path / "straight"), tiny_config(), task=KilledAt(dataset, kill_step=None), log=lambda *_: None)
    with pytest.raises(Killed):
        train("", str(tmp_path / "resumed"), tiny_config(), task=KilledAt(dataset, kill_step=4), log=lambda *_: None)
    assert json.load(open(tmp_path / "resumed" / "checkpoint" / "state.json"))["step"] == 4
    train(
        "",
        str(tmp_path / "resumed"),
        tiny_config(),
        resume=True,
        task=KilledAt(dataset, kill_step=None),
        log=lambda *_: None,
    )
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


def test_interrupted_checkpoint_swap_still_loads(tmp_path):
    torch.manual_seed(0)
    model = UNet(UNetConfig(sample_size=8, **TINY_UNET))
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(str(tmp_path), model, model, optimizer, 7, tiny_config())
    # a crash between the two renames leaves only checkpoint.old: it is still found
    os.replace(tmp_path / "checkpoint", tmp_path / "checkpoint.old")
    os.makedirs(tmp_path / "checkpoint.tmp")  # and a half-written temporary folder is ignored
    assert find_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint.old")


def test_killed_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    import uncond.train

    torch.manual_seed(0)
    model = UNet(UNetConfig(sample_size=8, **TINY_UNET))
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(str(tmp_path), model, model, optimizer, 7, tiny_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    real_save_file = uncond.train.save_file

    def killed_mid_file(tensors, path):  # half of the second file reaches the disk, then the process dies
        if path.endswith("ema.safetensors"):
            real_save_file(tensors, path)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            raise Killed()
        real_save_file(tensors, path)

    monkeypatch.setattr(uncond.train, "save_file", killed_mid_file)
    with pytest.raises(Killed):
        save_checkpoint(str(tmp_path), model, model, optimizer, 9, tiny_config())
    # the half-written step 9 stays in checkpoint.tmp; resuming finds and loads step 7, exactly as it was saved
    assert find_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint")
    fresh = UNet(UNetConfig(sample_size=8, **TINY_UNET))
    assert load_checkpoint(str(tmp_path / "checkpoint"), fresh, fresh, torch.optim.AdamW(fresh.parameters())) == 7
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())


def test_bad_config_raises():
    with pytest.raises(ValueError, match="prediction_type"):
        TrainConfig(prediction_type="noise")
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


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
        json.dumps(
            {
                "image_size": 8,
                "batch_size": 4,
                "max_steps": 2,
                "warmup_steps": 1,
                "num_sample_images": 2,
                "unet": TINY_UNET,
            }
        )
    )
    main(["--data", str(data), "--out", str(tmp_path / "run"), "--config", str(config)])
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "samples" / "step_0000002.png").is_file()
    saved = json.load(open(tmp_path / "run" / "train_config.json"))
    assert saved["max_steps"] == 2 and saved["unet"]["block_out_channels"] == [8, 16]


def test_init_from_a_model_folder_starts_from_its_weights(tmp_path):
    dataset = TinyDataset()
    train(
        "",
        str(tmp_path / "first"),
        tiny_config(max_steps=2),
        task=KilledAt(dataset, kill_step=None),
        log=lambda *_: None,
    )
    first = UNet.from_pretrained(str(tmp_path / "first"))
    config = tiny_config(max_steps=1, learning_rate=1e-12, warmup_steps=1, init_from=str(tmp_path / "first"))
    train("", str(tmp_path / "second"), config, task=KilledAt(dataset, kill_step=None), log=lambda *_: None)
    second = UNet.from_pretrained(str(tmp_path / "second"))
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


class RecordingTask(KilledAt):
    """Records the data indices of every batch."""

    def __init__(self, dataset):
        super().__init__(dataset, kill_step=None)
        self.drawn = []

    def model_kwargs(self, indices, generator, device):
        self.drawn.extend(int(i) for i in indices)
        return super().model_kwargs(indices, generator, device)


def test_balance_variants_repeats_the_single_emoji_in_each_epoch(tmp_path):
    from uncond.data import SKIN_TONES

    dataset = TinyDataset()
    # one emoji with six variants, two without: repeat factors 1 and round(sqrt(6)) = 2, an epoch of 6 + 2 * 2 = 10
    dataset.captions = ["waving hand"] + [f"waving hand: {tone}" for tone in SKIN_TONES] + ["pizza", "rocket"]
    task = RecordingTask(dataset)
    train(
        "",
        str(tmp_path / "run"),
        tiny_config(max_steps=3, batch_size=10, balance_variants=True),
        task=task,
        log=lambda *_: None,
    )
    counts = [task.drawn.count(i) for i in range(8)]
    assert counts == [3, 3, 3, 3, 3, 3, 6, 6]

    plain = RecordingTask(dataset)
    train("", str(tmp_path / "plain"), tiny_config(max_steps=2, batch_size=8), task=plain, log=lambda *_: None)
    assert [plain.drawn.count(i) for i in range(8)] == [2] * 8
