"""The side-by-side measurements: forwards (with FLOP/s), sampling loops, training steps, scheduler steps, host waits."""

import statistics

import torch

from bench.measure import (
    compare,
    count_flops,
    diffusers_diffusion_loss,
    host_waits_for_device,
    synchronize,
    time_alternately,
    time_steps,
    training_step,
)
from uncond.conv import convolution_paths
from uncond.sampling import make_scheduler
from uncond.train import diffusion_loss

PROMPT = "red heart"
GUIDANCE_SCALE = 5.0


def pixel_difference(ours: list, theirs: list) -> tuple[int, float]:
    """Largest and mean difference of the pixel values (0..255) of two lists of PIL images."""
    import numpy as np

    difference = np.abs(
        np.stack([np.asarray(a, dtype=np.int16) for a in ours])
        - np.stack([np.asarray(b, dtype=np.int16) for b in theirs])
    )
    return int(difference.max()), float(difference.mean())


def speed_row(model: str, what: str, batch: int, runs: dict, variant: str, cpu: dict | None = None, **extra) -> dict:
    """One row of the table from every run's seconds: medians, their ratio, and the runs themselves (ms).

    With one thread, the same from the runs' CPU seconds (`cpu`, see `time_alternately`): `speedup_cpu`.
    """
    ours, theirs = statistics.median(runs["ours"]), statistics.median(runs["diffusers"])
    row = {
        "model": model,
        "what": what,
        "batch": batch,
        "variant": variant,
        "ours_ms": ours * 1e3,
        "diffusers_ms": theirs * 1e3,
        "speedup": theirs / ours,
    }
    if cpu and torch.get_num_threads() == 1:
        ours_cpu, theirs_cpu = statistics.median(cpu["ours"]), statistics.median(cpu["diffusers"])
        row.update(ours_cpu_ms=ours_cpu * 1e3, diffusers_cpu_ms=theirs_cpu * 1e3, speedup_cpu=theirs_cpu / ours_cpu)
    return {
        **row,
        **extra,
        "ours_runs_ms": [t * 1e3 for t in runs["ours"]],
        "diffusers_runs_ms": [t * 1e3 for t in runs["diffusers"]],
    }


def compiled(model, variant: str):
    """The model as the variant runs it: eager, torch.compile, or torch.compile with CUDA graphs."""
    if variant == "eager":
        return model
    return torch.compile(model, mode="reduce-overhead" if variant == "cuda graphs" else None)


def bench_pair(
    name: str, ours, theirs, make_inputs, sampling, plan: dict, device, variants: list, matmul, matmul_flops: int, log
) -> list:
    """Forward, FLOP/s and sampling rows for one (ours, diffusers) model pair; `matmul()` does `matmul_flops`, timed alongside."""
    rows = []
    for variant in variants:
        ours_v, theirs_v = compiled(ours, variant), compiled(theirs, variant)
        for batch, repeats in plan["forward"].items():
            x, t, kwargs = make_inputs(batch)
            candidates = {"ours": lambda: ours_v(x, t, **kwargs), "diffusers": lambda: theirs_v(x, t, **kwargs)}
            if variant == "eager":
                candidates["matmul"] = matmul  # the peak matmul again, alongside: under the same load as the forwards
            with torch.inference_mode():
                runs = time_alternately(candidates, repeats, device, cpu=(cpu := {}))
                # which path our convolutions took (uncond/conv.py): oneDNN on packed weights, or nn.Conv2d's
                paths = convolution_paths(lambda: ours_v(x, t, **kwargs)) if variant == "eager" else None
            seconds = {label: statistics.median(times) for label, times in runs.items()}
            extra = {"ours_convolutions": paths} if paths else {}
            if variant == "eager":
                # the FLOP counter does not know our packed CPU convolutions: with autograd on they are nn.Conv2d's, which it counts
                with torch.enable_grad():
                    flops = count_flops(lambda: ours(x, t, **kwargs))
                peak = matmul_flops / seconds["matmul"]
                extra = {
                    **extra,
                    "flops": flops,
                    "ours_flops_per_s": flops / seconds["ours"],
                    "diffusers_flops_per_s": flops / seconds["diffusers"],
                    "matmul_flops_per_s": peak,
                    "ours_fraction_of_peak": flops / seconds["ours"] / peak,
                    "diffusers_fraction_of_peak": flops / seconds["diffusers"] / peak,
                }
            rows.append(speed_row(name, "UNet forward", batch, runs, variant, cpu, **extra))
            log(rows[-1])
        for batch, repeats in plan["sampling"].items():
            ours_run, theirs_run = sampling(ours_v, theirs_v, batch)
            largest, mean = pixel_difference(ours_run(), theirs_run())
            runs = time_alternately({"ours": ours_run, "diffusers": theirs_run}, repeats, device, cpu=(cpu := {}))
            rows.append(
                speed_row(
                    name,
                    f"DDIM-{plan['steps']} sampling",
                    batch,
                    runs,
                    variant,
                    cpu,
                    max_pixel_difference=largest,
                    mean_pixel_difference=mean,
                )
            )
            log(rows[-1])
    return rows


def bench_training(name: str, ours, theirs, make_inputs, scheduler_config: dict, plan: dict, device, log) -> dict:
    """One training step (forward, MSE loss, backward, AdamW) at the plan's batch, in fp32, ours against diffusers'."""
    from diffusers import DDPMScheduler as DiffusersDDPM

    from uncond.scheduler import DDPMScheduler

    batch = plan["train_batch"]
    x_0, _, kwargs = make_inputs(batch)
    x_0 = x_0.float().clamp(-1, 1)
    ours, theirs = ours.float().train(), theirs.float().train()
    ours_scheduler, theirs_scheduler = (
        DDPMScheduler.from_config(scheduler_config),
        DiffusersDDPM.from_config(scheduler_config),
    )
    ours_opt, theirs_opt = (
        torch.optim.AdamW(ours.parameters(), lr=1e-4),
        torch.optim.AdamW(theirs.parameters(), lr=1e-4),
    )
    # epsilon loss on both sides (the comparison is of the network and its backward, not of the target)
    runs = time_alternately(
        {
            "ours": lambda: training_step(
                ours,
                ours_opt,
                lambda m: diffusion_loss(m, ours_scheduler, x_0, torch.Generator().manual_seed(0), "epsilon", **kwargs),
            ),
            "diffusers": lambda: training_step(
                theirs,
                theirs_opt,
                lambda m: diffusers_diffusion_loss(
                    m, theirs_scheduler, x_0, torch.Generator().manual_seed(0), **kwargs
                ),
            ),
        },
        plan["train_repeats"],
        device,
        cpu=(cpu := {}),
    )
    ours.eval(), theirs.eval()
    row = speed_row(name, "training step", batch, runs, "eager", cpu)
    log(row)
    return row


def bench_scheduler(unet, scheduler_config: dict, plan: dict, device, dtype, log) -> dict:
    """Seconds per scheduler step (ours and diffusers', DDIM and DDPM) against one UNet forward at batch 1."""
    import diffusers

    steps = plan["steps"]
    shape = (1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    x_t = torch.randn(shape, device=device)
    model_output = torch.randn(shape, device=device)
    t = torch.tensor(500)
    with torch.inference_mode():
        forward = compare({"unet": lambda: unet(x_t.to(dtype), t)}, plan["forward"][1], device)["unet"]
    result = {"unet_forward_ms": forward * 1e3}
    for name, ours_cls, theirs_cls in [
        ("ddim", "ddim", diffusers.DDIMScheduler),
        ("ddpm", "ddpm", diffusers.DDPMScheduler),
    ]:
        for side, scheduler in [
            ("ours", make_scheduler(ours_cls, scheduler_config)),
            ("diffusers", theirs_cls.from_config(scheduler_config)),
        ]:
            scheduler.set_timesteps(steps)
            generator = torch.Generator().manual_seed(0)

            def run_steps():
                for step_t in scheduler.timesteps:
                    scheduler.step(model_output, step_t, x_t, generator=generator)

            with torch.inference_mode():
                per_step = time_steps(run_steps, steps, plan["scheduler_repeats"], device)
            result[f"{side}_{name}_step_ms"] = per_step * 1e3
            result[f"{side}_{name}_fraction_of_step"] = per_step / (per_step + forward)
    log(result)
    return result


def check_no_syncs(
    uncond_unet, txt2img_unet, text_encoder, uncond_schedule: dict, txt2img_schedule: dict, steps: int, device
) -> dict:
    """On a GPU: None where our sampling loop never makes the host wait for the device, else the error (sync debug mode)."""
    from txt2img.clip import TextEmbeddings
    from txt2img.guidance import guided_model_fn
    from uncond.sampling import initial_noise, sample, unet_model_fn

    config = uncond_unet.config
    shape = (2, config.in_channels, config.sample_size, config.sample_size)
    embeddings = text_encoder.encode([PROMPT, PROMPT, "", ""])
    cond = TextEmbeddings(embeddings.hidden_states[:2], embeddings.attention_mask[:2], [False] * 2)
    uncond = TextEmbeddings(embeddings.hidden_states[2:], embeddings.attention_mask[2:], [False] * 2)
    result = {}
    for name, scheduler, loop in [
        (
            "uncond ddim eta=1",
            make_scheduler("ddim", uncond_schedule),
            lambda s, x, g: sample(unet_model_fn(uncond_unet), s, x, g, eta=1.0),
        ),
        (
            "uncond ddpm",
            make_scheduler("ddpm", uncond_schedule),
            lambda s, x, g: sample(unet_model_fn(uncond_unet), s, x, g),
        ),
        (
            "txt2img ddim guided",
            make_scheduler("ddim", txt2img_schedule),
            lambda s, x, g: sample(
                guided_model_fn(txt2img_unet, cond, uncond, GUIDANCE_SCALE), s, x, g, use_clipped_model_output=True
            ),
        ),
    ]:
        scheduler.set_timesteps(steps)
        x_t, generator = initial_noise(shape, 0, device)
        synchronize(device)
        result[name] = host_waits_for_device(lambda: loop(scheduler, x_t, generator))
    return result
