"""The cascade's rows: each tab's default request alone and followed by the upsampler, timed side by side, and the
upsampler's forward pass in FLOP/s against the matmul rate timed alongside it.

The budget (issue #15): the app's default text-to-image request (4 images, DDIM 50 with guidance) followed by the
upsampler takes at most 2.5 times the request alone. The pipelines are called directly, as `bench/app_timings.py`
does, never through app.py.
"""

import statistics

import torch

from bench.app_timings import APP_TXT2IMG, APP_UNCOND
from bench.measure import compare, count_flops, time_alternately
from uncond.upscale_pipeline import DEFAULT_STEPS, upscale_result

CASCADE_BUDGET = 2.5  # the cascade's time over the base request's, at most
FORWARD_BATCH = 4  # the app's default number of images


def upsampler_forward(up, batch: int, device):
    """A zero-argument forward pass of the upsampler's UNet on `batch` 128 px pictures with their low-res input."""
    config = up.unet.config
    size, channels = config.sample_size, config.in_channels + config.low_res_channels
    x = torch.randn(batch, channels, size, size, device=device, dtype=up.dtype)
    t, level = torch.tensor(500, device=device), torch.tensor(up.config.noise_level, device=device)
    return lambda: up.unet(x, t, noise_level=level)


def bench_cascade(pipes: dict, up, base_steps: int, repeats: int, matmul, matmul_flops: int, device, log) -> dict:
    """Seconds of each tab's default request alone and with the upsampler (the app's default steps), their ratio, and
    the upsampler's forward FLOP/s; `pipes` is {"uncond": pipeline, "txt2img": pipeline}."""
    steps = DEFAULT_STEPS  # the app's
    result = {"upscale_steps": steps, "noise_level": up.config.noise_level}
    for tab, settings in (("uncond", APP_UNCOND), ("txt2img", APP_TXT2IMG)):
        pipe, settings = pipes[tab], {**settings, "num_inference_steps": base_steps}

        def base(pipe=pipe, settings=settings):
            return pipe(**settings)

        def cascade(pipe=pipe, settings=settings):
            return upscale_result(pipe(**settings), up, num_inference_steps=steps)

        cpu = {}
        times = time_alternately({"base": base, "cascade": cascade}, repeats, device, warmup=1, cpu=cpu)
        wall = {name: statistics.median(values) for name, values in times.items()}
        cpu = {name: statistics.median(values) for name, values in cpu.items()}
        result[tab] = {
            "base_s": wall["base"],
            "cascade_s": wall["cascade"],
            "ratio": wall["cascade"] / wall["base"],
            "ratio_cpu": cpu["cascade"] / cpu["base"] if cpu["base"] else None,
            "base_steps": base_steps,
            "num_images": settings["num_images"],
        }
        log({f"cascade_{tab}": result[tab]})
    forward = upsampler_forward(up, FORWARD_BATCH, device)
    # the FLOP counter does not know our packed CPU convolutions: with autograd on they are nn.Conv2d's, which it counts
    with torch.enable_grad():
        flops = count_flops(forward)
    with torch.inference_mode():
        seconds = compare({"forward": forward, "matmul": matmul}, max(repeats, 3), device)
    result["forward"] = {
        "batch": FORWARD_BATCH,
        "size": up.unet.config.sample_size,
        "flops": flops,
        "flops_per_s": flops / seconds["forward"],
        "matmul_flops_per_s": matmul_flops / seconds["matmul"],
        "fraction_of_peak": (flops / seconds["forward"]) / (matmul_flops / seconds["matmul"]),
        "ms": seconds["forward"] * 1000,
    }
    log({"upsampler_forward": result["forward"]})
    return result


def cascade_target(cascade: dict | None) -> list:
    """The budget as a target line (none without an upsampler)."""
    if not cascade:
        return []
    ratio = cascade["txt2img"]["ratio"]
    return [
        {
            "target": f"text-to-image request + upsampler ({cascade['upscale_steps']} steps) <= {CASCADE_BUDGET}x the request",
            "value": ratio,
            "holds": ratio <= CASCADE_BUDGET,
        }
    ]


def cascade_lines(cascade: dict | None) -> list[str]:
    """The cascade's lines of the printed report."""
    if not cascade:
        return ["Cascade: no upsampler (weights/upscale) to time"]
    lines = []
    for tab in ("uncond", "txt2img"):
        c = cascade[tab]
        lines.append(
            f"Cascade {tab} (DDIM {c['base_steps']}, {c['num_images']} images, then {cascade['upscale_steps']} upsampler "
            f"steps): base {c['base_s']:.2f} s, with the upsampler {c['cascade_s']:.2f} s ({c['ratio']:.2f}x; "
            f"{c['ratio_cpu']:.2f}x in CPU seconds)"
        )
    f = cascade["forward"]
    lines.append(
        f"Upsampler forward, batch {f['batch']} at {f['size']} px: {f['flops'] / 1e9:.3g} GFLOP in {f['ms']:.0f} ms, "
        f"{f['flops_per_s'] / 1e9:.1f} GFLOP/s ({f['fraction_of_peak']:.0%} of the matmul's {f['matmul_flops_per_s'] / 1e9:.1f})"
    )
    return lines


def tiny_upscaler(base_size: int, scheduler_config: dict):
    """A random 4x upsampler for `base_size` px pictures, channels 8-16 (the --tiny run)."""
    from uncond.unet import UNet, UNetConfig
    from uncond.upscale_pipeline import UpscaleConfig, UpscalePipeline

    torch.manual_seed(0)
    config = UNetConfig(
        sample_size=base_size * 4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_resolutions=(),
        mid_block_attention=False,
        attention_head_dim=None,
        norm_num_groups=4,
        low_res_channels=3,
        noise_level_embedding=True,
    )
    return UpscalePipeline(UNet(config), scheduler_config, UpscaleConfig(scale_factor=4))


def shipped_upscaler(root: str, device, dtype):
    """weights/upscale as the app loads it, None where it is not shipped."""
    import os

    from uncond.upscale_pipeline import UpscalePipeline

    folder = os.path.join(root, "weights", "upscale")
    return UpscalePipeline.from_pretrained(folder, device=device, dtype=dtype) if os.path.isdir(folder) else None
