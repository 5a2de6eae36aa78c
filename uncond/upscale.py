"""Super-resolution conditioning (Ho et al. 2021, "Cascaded Diffusion Models"; Saharia et al. 2022, Imagen).

A super-resolution stage is the project's UNet with `low_res_channels` more input channels: it denoises a high-res
x_t (B, 3, H, W) given the low-res picture (B, 3, H / f, W / f), upsampled bicubic to H x W and concatenated with
x_t. Noise-conditioning augmentation (Ho et al. 2021, sec. 4): the low-res picture is itself noised to a level s,
z_s = sqrt(alpha-bar_s) x_lr + sqrt(1 - alpha-bar_s) eps (the training schedule's `add_noise` at timestep s), and s
reaches the network as an embedding added to the timestep embedding. Training draws s ~ U{0..max_noise_level};
sampling fixes a small s, so the stage does not copy the base model's artefacts into the sharp picture.

The noise goes on at the low resolution, before upsampling: the artefacts the stage must forgive are those of a
32 px picture. `low_res_model_fn` wraps a UNet into the one loop's `model_fn(x_t, t)` as guidance does
(`txt2img/guidance.py`): the loop never knows there is a low-res image.
"""

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from uncond.checks import check_int
from uncond.sampling import ModelFn, model_dtype

DEFAULT_SCALE_FACTOR = 4  # one 32 -> 128 stage (README "The cascade": why one stage, not two)


def upsample(low_res: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, h, w) in [-1, 1] -> (B, C, size, size), bicubic (Ho et al. 2021: the conditioning is upsampled first)."""
    return F.interpolate(low_res.float(), size=(size, size), mode="bicubic", align_corners=False)


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, C, H, W) -> uint8 (B, C, size, size) with PIL's Lanczos filter, as the data builder shrinks each size."""
    out = []
    for image in images:
        array = image.permute(1, 2, 0).numpy()  # (H, W, C)
        pil = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        small = np.asarray(pil.resize((size, size), Image.Resampling.LANCZOS)).copy()
        out.append(torch.from_numpy(small.reshape(size, size, -1)).permute(2, 0, 1))
    return torch.stack(out)


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of pictures in [-1, 1] against a reference: 10 log10(1 / MSE) on [0, 1] pixels,
    averaged over the pictures."""
    mse = ((images.float() - reference.float()) / 2).square().flatten(1).mean(dim=1).clamp_min(1e-10)  # (B,)
    return float((10 * torch.log10(1 / mse)).mean())


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """A normalised (size, size) Gaussian window."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return torch.outer(g, g) / g.sum() ** 2


def ssim(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Structural similarity (Wang et al. 2004, eq. 13) of pictures in [-1, 1] against a reference, on [0, 1] pixels,
    averaged over pictures, channels and the window positions that fit inside the picture.

    An 11x11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03 and sample covariances (N / (N - 1)), as scikit-image's
    `structural_similarity(gaussian_weights=True, data_range=1)`, which the tests check it against.
    """
    x, y = ((t.double() + 1) / 2 for t in (images, reference))  # (B, C, H, W) in [0, 1]
    channels = x.shape[1]
    window = gaussian_window().to(x.device).expand(channels, 1, 11, 11)

    def blur(t):  # the local weighted mean, only where the window fits (scikit-image crops the borders the same way)
        return F.conv2d(t, window, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    norm = 121 / 120  # sample covariance over the window's N = 121 pixels
    var_x, var_y = norm * (blur(x * x) - mu_x**2), norm * (blur(y * y) - mu_y**2)
    cov = norm * (blur(x * y) - mu_x * mu_y)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(s.flatten(1).mean(dim=1).mean())


def check_noise_level(noise_level, max_noise_level: int) -> int:
    """A whole-number augmentation level in [0, max_noise_level] (a timestep of the training schedule)."""
    return check_int("noise_level", noise_level, 0, max_noise_level)


def augment(scheduler, low_res: torch.Tensor, noise: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
    """z_s = sqrt(alpha-bar_s) x_lr + sqrt(1 - alpha-bar_s) eps per item (Ho et al. 2021, sec. 4.2, Gaussian)."""
    return scheduler.add_noise(low_res, noise, noise_level)


def conditioning(scheduler, low_res: torch.Tensor, noise: torch.Tensor, noise_level: torch.Tensor, size: int):
    """The network's extra input: the low-res picture noised to `noise_level`, then upsampled to `size` (B, C, size, size)."""
    return upsample(augment(scheduler, low_res, noise, noise_level), size)


def concat_inputs(x_t: torch.Tensor, low_res_cond: torch.Tensor) -> torch.Tensor:
    """[x_t, upsampled low-res] along channels: (B, 3 + 3, H, W), the stage's input (training and sampling alike)."""
    if x_t.shape[0] != low_res_cond.shape[0] or x_t.shape[-2:] != low_res_cond.shape[-2:]:
        raise ValueError(f"low_res_cond {tuple(low_res_cond.shape)} does not match x_t {tuple(x_t.shape)}")
    return torch.cat([x_t, low_res_cond.to(x_t.dtype)], dim=1)


def low_res_model_fn(unet, low_res_cond: torch.Tensor, noise_level: torch.Tensor) -> ModelFn:
    """The model function of a super-resolution UNet for one batch of conditioning images (B, C, H, W) at a level.

    The UNet runs in its dtype; x_t and the scheduler stay in x_t's (float32 from the pipeline).
    """
    if not unet.config.low_res_channels:
        raise ValueError("unet has no low_res_channels: it is not a super-resolution stage")
    device, dtype = next(unet.parameters()).device, model_dtype(unet, torch.float32)
    low_res_cond = low_res_cond.to(device=device, dtype=dtype)  # once, not per step
    noise_level = noise_level.to(device, non_blocking=True)

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return unet(concat_inputs(x_t.to(dtype), low_res_cond), t, noise_level=noise_level).to(x_t.dtype)

    return model_fn
