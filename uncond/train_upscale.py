"""Train the super-resolution stage of the cascade (Ho et al. 2021, "Cascaded Diffusion Models"), 32 -> 128 px.

    python -m uncond.train_upscale --data data/emoji-multi/128 --out runs/upscale --config configs/upscale_cpu128.json
    python -m uncond.train_upscale ... --resume          (continues exactly, as the other trainers do)

Each step: random `crop_size` crops of the 128 px pictures (64 px by default) and the matching crops of their
32 px versions (shrunk with Lanczos, as the data builder shrinks every size), so 16 px; the low-res crop is noised to
an augmentation level s ~ U{0..max_noise_level} (`uncond.upscale.augment`, Ho et al. 2021, sec. 4), upsampled
bicubic to the crop size and concatenated with x_t; s goes to the UNet's `noise_level_embedding`. The loss is the
DDPM loss of `uncond.train` (eps or v), the loop `uncond.train_loop` (AdamW, EMA, accelerate, exact resume).

The network is fully convolutional with no attention (`UPSCALE_UNET`), so the model trained on 64 px crops samples
the whole 128 px picture. Its size was chosen by FLOPs (torch.utils.flop_counter, forward pass) to cost a base step:
the base UNet on 64 images of 32 px is 48.8 GFLOP; this UNet on 32 crops of 64 px (the same 65,536 pixels) is
43.7 GFLOP (channels 16-32-64-128, two resnets per level, 3.5M parameters; 21.8 GFLOP per 128 px forward at batch 4).
Channels 32-64-128 with one resnet per level (the issue's 2.5M-parameter measurement) are 92.6 GFLOP at 32 crops.

Measured (bf16 autocast, one thread, nice 19 on the project's shared 2-core machine at a load of 5-6; CPU seconds
per optimiser step, median of 4 after the first, the two runs alternating in one process): through the tasks and
the shared loop (batch, cropping, Lanczos, augmentation, AdamW, EMA) with `configs/uncond_cpu32.json` and
`configs/upscale_cpu128.json`, the base step (64 x 32 px) took 1.39 s and this step (32 crops of 64 px) 1.35 s
(0.97x). The bare UNets alone: 1.31 s against 1.26 s; channels 32-64-128 x 1: 1.06 s at 16 crops, 2.20 s at 32.

`OUT/` holds the latest EMA model as an `UpscalePipeline` folder: config.json, model.safetensors,
scheduler_config.json, upscale_config.json, train_config.json; `OUT/samples/` a grid (bicubic, ours, real) every
`sample_every` steps, and log.jsonl the PSNR of the EMA model and of bicubic on the same pictures.
"""

from dataclasses import dataclass, field

import torch

from uncond import train_loop
from uncond.train import TrainConfig, UnconditionalTask, mse_loss, noisy_inputs, samples_path, write_configs
from uncond.train import draw_noise as draw_diffusion_noise
from uncond.train_config import config_from_args, training_parser
from uncond.train_loop import batch_indices, step_generator
from uncond.unet import UNet, UNetConfig
from uncond.upscale import DEFAULT_SCALE_FACTOR, concat_inputs, conditioning, downsample, psnr, upsample
from uncond.upscale_pipeline import UpscaleConfig, upscale_images, write_upscale_config

# fully convolutional, no attention (Ho et al. 2021 use none at their high resolutions); sized by FLOPs (module doc)
UPSCALE_UNET = {
    "block_out_channels": [16, 32, 64, 128],
    "layers_per_block": 2,
    "attention_resolutions": [],
    "mid_block_attention": False,
    "attention_head_dim": None,
    "norm_num_groups": 8,
}


@dataclass
class UpscaleTrainConfig(TrainConfig):
    """`TrainConfig` of a super-resolution stage: image_size is the output size; crops, scale and augmentation."""

    image_size: int = 128  # the high-res pictures (loaded at this size) and the stage's output size
    batch_size: int = 32  # crops per step
    scale_factor: int = DEFAULT_SCALE_FACTOR  # high-res size / low-res size
    crop_size: int = 64  # high-res crop side; its low-res crop is crop_size / scale_factor
    max_noise_level: int = 350  # augmentation levels s ~ U{0..max_noise_level}, timesteps of the training schedule
    sample_noise_level: int = 50  # the level the sample grids use, and the folder's default at sampling
    sample_steps: int = 25  # DDIM steps of the sample grids
    num_sample_images: int = 8
    hold_out: bool = True  # leave out uncond.splits.held_out, the evaluation's pictures
    unet: dict = field(default_factory=lambda: dict(UPSCALE_UNET))  # over UPSCALE_UNET; channels set by the task

    def __post_init__(self):
        super().__post_init__()
        for name in ("scale_factor", "crop_size", "sample_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "scale_factor" else 1):
                raise ValueError(
                    f"{name} must be a whole number >= {2 if name == 'scale_factor' else 1}, got {value!r}"
                )
        if self.image_size % self.scale_factor or self.crop_size % self.scale_factor:
            raise ValueError(
                f"image_size {self.image_size} and crop_size {self.crop_size} must be multiples of scale_factor {self.scale_factor}"
            )
        if self.crop_size > self.image_size:
            raise ValueError(f"crop_size {self.crop_size} must be at most image_size {self.image_size}")
        levels = len(self.unet_config().block_out_channels)
        if self.crop_size % 2 ** (levels - 1):
            raise ValueError(
                f"crop_size {self.crop_size} must be a multiple of {2 ** (levels - 1)} for the UNet's levels"
            )
        if not 0 <= self.max_noise_level < self.num_train_timesteps:
            raise ValueError(
                f"max_noise_level must be in 0..{self.num_train_timesteps - 1}, got {self.max_noise_level!r}"
            )
        if not 0 <= self.sample_noise_level <= self.max_noise_level:
            raise ValueError(f"sample_noise_level must be in 0..max_noise_level, got {self.sample_noise_level!r}")

    def unet_config(self) -> UNetConfig:
        """The stage's UNet: `unet` over UPSCALE_UNET, RGB x_t plus the RGB low-res image, the level embedded."""
        return UNetConfig(
            **{
                **UPSCALE_UNET,
                **self.unet,
                "sample_size": self.image_size,  # what it samples (fully convolutional: training feeds crops)
                "in_channels": 3,
                "out_channels": 3,
                "low_res_channels": 3,
                "noise_level_embedding": True,
            }
        )

    def upscale_config(self) -> UpscaleConfig:
        """What the run folder's upscale_config.json records: scale factor, largest and default level."""
        return UpscaleConfig(self.scale_factor, self.max_noise_level, self.sample_noise_level)


def random_crops(high: torch.Tensor, low: torch.Tensor, crop_size: int, scale: int, generator: torch.Generator):
    """Aligned crops: (B, C, crop, crop) of `high` and (B, C, crop / scale, crop / scale) of `low`, offsets drawn.

    Offsets are multiples of `scale` in the high-res picture, so each low-res crop covers its high-res crop exactly.
    """
    positions = (high.shape[-1] - crop_size) // scale + 1
    offsets = torch.randint(0, positions, (len(high), 2), generator=generator)  # (B, [y, x]) in low-res pixels
    small = crop_size // scale
    high_crops, low_crops = [], []
    for image, image_low, (y, x) in zip(high, low, offsets.tolist()):
        high_crops.append(image[:, y * scale : y * scale + crop_size, x * scale : x * scale + crop_size])
        low_crops.append(image_low[:, y : y + small, x : x + small])
    return torch.stack(high_crops), torch.stack(low_crops)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [-1, 1]."""
    return images.float() / 127.5 - 1.0


class UpscaleTask(UnconditionalTask):
    """The DDPM objective on a super-resolution UNet: crops, their low-res crops, noise-conditioning augmentation."""

    def build_model(self, config: UpscaleTrainConfig) -> UNet:
        """A freshly initialised super-resolution UNet (`UpscaleTrainConfig.unet_config`)."""
        return UNet(config.unet_config())

    def batch(self, step: int, part: slice, device) -> dict:
        """Crops, low-res crops, augmentation noise and level, ε, t and x_t of step `step` (its global batch, `part` kept)."""
        c = self.config
        indices = self.pool[batch_indices(step, len(self.pool), c.batch_size, c.seed)]
        generator = step_generator(c.seed, step)
        high = self.dataset.images[indices]  # uint8 (B, C, H, W)
        low = downsample(high, c.image_size // c.scale_factor)  # uint8 (B, C, H / f, W / f), as the data is shrunk
        high, low = random_crops(high, low, c.crop_size, c.scale_factor, generator)
        if c.random_flip:
            flip = torch.rand(len(indices), generator=generator) < 0.5
            high[flip], low[flip] = high[flip].flip(-1), low[flip].flip(-1)
        x_0, low_res = to_unit(high), to_unit(low)
        noise, timesteps = draw_diffusion_noise(x_0.shape, c.num_train_timesteps, generator)
        low_res_noise = torch.randn(low_res.shape, generator=generator)
        noise_level = torch.randint(0, c.max_noise_level + 1, (len(indices),), generator=generator)
        x_0, noise, timesteps, low_res, low_res_noise, noise_level = (
            t[part] for t in (x_0, noise, timesteps, low_res, low_res_noise, noise_level)
        )
        # the conditioning on the CPU, like sampling's, then to the device: (B, C, crop, crop)
        low_res_cond = conditioning(self.scheduler, low_res, low_res_noise, noise_level, c.crop_size).to(device)
        x_0, noise, timesteps, noise_level = (
            x_0.to(device),
            noise.to(device),
            timesteps.to(device),
            noise_level.to(device),
        )
        x_t, target = noisy_inputs(self.scheduler, x_0, noise, timesteps, c.prediction_type)
        return {
            "x_0": x_0,
            "timesteps": timesteps,
            "x_t": x_t,
            "target": target,
            "low_res": low_res,  # the clean low-res crops (B, C, crop / f, crop / f), CPU
            "low_res_cond": low_res_cond,  # noised, then upsampled
            "noise_level": noise_level,
            "model_kwargs": {},
        }

    def loss(self, model, batch: dict) -> torch.Tensor:
        """||target - model([x_t, low-res], t, s)||², averaged."""
        model_input = concat_inputs(batch["x_t"], batch["low_res_cond"])  # (B, 6, crop, crop)
        return mse_loss(model(model_input, batch["timesteps"], noise_level=batch["noise_level"]), batch["target"])

    def save_model(self, out_dir: str, model, config: UpscaleTrainConfig) -> None:
        """The EMA model as an `UpscalePipeline` folder, with its scheduler, upscale and training configs."""
        model.save_pretrained(out_dir)
        write_configs(out_dir, config)
        write_upscale_config(out_dir, config.upscale_config())

    def evaluate(self, model, config: UpscaleTrainConfig, out_dir: str, step: int) -> dict:
        """The first `num_sample_images` pictures, whole, upsampled from 32 px: a grid (bicubic, ours, real) and PSNRs."""
        from uncond.images import save_grid, to_pil
        from uncond.train import scheduler_config

        n = min(config.num_sample_images, len(self.dataset))
        high = self.dataset.images[:n]
        low_res = to_unit(downsample(high, config.image_size // config.scale_factor))
        ours = upscale_images(
            model,
            scheduler_config(config),
            low_res,
            config.scale_factor,
            config.sample_steps,
            config.sample_noise_level,
        ).cpu()
        bicubic, real = upsample(low_res, config.image_size).clamp(-1, 1), to_unit(high)
        save_grid(to_pil(torch.cat([bicubic, ours, real])), samples_path(out_dir, step), columns=n)
        return {"step": step, "psnr": psnr(ours, real), "psnr_bicubic": psnr(bicubic, real)}


def make_upscale_task(data: str, dataset=None, log=print):
    """The `make_task` of the shared loop: the data set at image_size (held-out pictures left out) and the task."""

    def make_task(config: UpscaleTrainConfig) -> UpscaleTask:
        from uncond.data import ImageCaptionDataset

        data_set = dataset if dataset is not None else ImageCaptionDataset(data, image_size=config.image_size)
        if data_set.images.shape[-1] != config.image_size:
            raise ValueError(
                f"the data set's pictures are {data_set.images.shape[-1]} px, not image_size {config.image_size}"
            )
        if config.hold_out:
            from uncond.splits import training_subset

            kept = training_subset(data_set)
            log(f"holding out {len(data_set) - len(kept)} images (uncond.splits) for the evaluation")
            data_set = kept
        return UpscaleTask(data_set, config, log)

    return make_task


def train_upscale(
    data: str, out_dir: str, config: UpscaleTrainConfig, resume: bool = False, dataset=None, log=print
) -> str:
    """Run (or continue) a super-resolution training run; returns `out_dir`, which then holds the pipeline folder."""
    return train_loop.train(out_dir, config, make_upscale_task(data, dataset, log), resume=resume, log=log)


def main(argv=None):
    parser = training_parser(
        "Train the super-resolution stage of the cascade (32 -> 128 px).",
        UpscaleTrainConfig,
        "JSON file with UpscaleTrainConfig fields (and 'unet': UNetConfig fields over UPSCALE_UNET)",
    )
    args = parser.parse_args(argv)
    train_upscale(args.data, args.out, config_from_args(args, UpscaleTrainConfig), resume=args.resume)


if __name__ == "__main__":
    main()
