"""Benchmark: our UNets, sampling loops and training step against diffusers' at the same architecture, in one run.

    python -m bench                                  # the shipped architectures on the CPU, writes bench/results_cpu.json
    OMP_NUM_THREADS=1 taskset -c 1 python -m bench   # pinned to one core
    python -m bench --tiny --out /tmp/bench.json     # a tiny configuration in seconds (what the test runs)
    python -m bench --device cuda --dtype bfloat16 --compile --cuda-graphs --out bench/results_cuda.json

Every speed is a ratio of medians measured side by side (see bench/measure.py): "speedup" is diffusers' time
over ours, so > 1 means ours is faster. Both models of a pair hold the same weights (bench/models.py), and the
sampling rows also report how far apart the two libraries' images are (max pixel difference, 0..255).
"""

import argparse
import json
import os
import platform
import statistics
import time

import torch

from bench.measure import (
    app_startup_seconds,
    compare,
    count_flops,
    diffusers_ddim_pipeline,
    diffusers_diffusion_loss,
    diffusers_text_to_image,
    host_waits_for_device,
    matmul_peak,
    synchronize,
    time_alternately,
    time_request,
    time_steps,
    training_step,
)
from bench.models import (
    ROOT,
    SHIPPED_CLIP,
    SHIPPED_TXT2IMG_UNET,
    SHIPPED_UNCOND,
    count_parameters,
    shipped_txt2img_config,
    shipped_uncond_config,
    txt2img_pair,
    uncond_pair,
)
from txt2img.clip import TextEncoder
from txt2img.pipeline import TextToImagePipeline
from txt2img.unet import TextUNetConfig
from uncond.conv import Conv2d, convolution_paths
from uncond.pipeline import UnconditionalPipeline, make_scheduler
from uncond.train import diffusion_loss
from uncond.unet import UNetConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PROMPT = "red heart"
GUIDANCE_SCALE = 5.0


def load_scheduler_config(name: str) -> dict:
    """The shipped model's training schedule (weights/NAME/scheduler_config.json; read only)."""
    with open(os.path.join(ROOT, "weights", name, "scheduler_config.json")) as f:
        return json.load(f)


# what each size of run measures: batches and the repeats at each (one core: the big batches get few repeats)
FULL = dict(
    matmul_sizes=(512, 1024, 2048),
    matmul_repeats=5,
    forward={1: 15, 4: 9, 8: 7, 64: 3},
    flops_batch=8,
    sampling={1: 5, 4: 3},
    steps=50,
    train_batch=64,
    train_repeats=5,
    scheduler_repeats=20,
    request_steps=50,
)
TINY = dict(
    matmul_sizes=(128, 256),
    matmul_repeats=3,
    forward={1: 2, 2: 2},
    flops_batch=2,
    sampling={1: 2, 2: 1},
    steps=3,
    train_batch=2,
    train_repeats=1,
    scheduler_repeats=2,
    request_steps=11,
)


def tiny_models() -> tuple[UNetConfig, TextUNetConfig, TextEncoder]:
    """8x8 UNets and a random 1-layer CLIP text tower behind the shipped tokenizer: the whole benchmark in seconds."""
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel

    shape = dict(
        sample_size=8,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_resolutions=(4,),
        norm_num_groups=4,
        attention_head_dim=8,
    )
    tokenizer = AutoTokenizer.from_pretrained(SHIPPED_CLIP)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return (
        UNetConfig(**shape),
        TextUNetConfig(**shape, cross_attention_dim=16),
        TextEncoder(tokenizer, CLIPTextModel(text_config)),
    )


def cpu_name() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what the platform module says."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


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
    from txt2img.pipeline import sample as txt2img_sample
    from uncond.pipeline import initial_noise
    from uncond.pipeline import sample as uncond_sample

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
            lambda s, x, g: uncond_sample(uncond_unet, s, x, g, eta=1.0),
        ),
        ("uncond ddpm", make_scheduler("ddpm", uncond_schedule), lambda s, x, g: uncond_sample(uncond_unet, s, x, g)),
        (
            "txt2img ddim guided",
            make_scheduler("ddim", txt2img_schedule),
            lambda s, x, g: txt2img_sample(txt2img_unet, s, x, g, cond, uncond, GUIDANCE_SCALE),
        ),
    ]:
        scheduler.set_timesteps(steps)
        x_t, generator = initial_noise(shape, 0, device)
        synchronize(device)
        result[name] = host_waits_for_device(lambda: loop(scheduler, x_t, generator))
    return result


# the app's defaults (app.py: DDIM, 50 steps, 4 images, seed 0; eta 1 unconditional, 0 with text; guidance 4)
# and the steps at which it shows a preview (webapp/streaming.py): the request timings call the pipelines with them
APP_UNCOND = dict(num_images=4, num_inference_steps=50, scheduler="ddim", eta=1.0, seed=0)
APP_TXT2IMG = dict(
    prompt=PROMPT,
    negative_prompt="",
    num_images=4,
    num_inference_steps=50,
    scheduler="ddim",
    eta=0.0,
    guidance_scale=4.0,
    seed=0,
)
APP_PREVIEW_EVERY = 5


def bench_requests(uncond_pipe, txt2img_pipe, steps: int, log) -> dict:
    """Seconds from a pipeline call with the app's default settings to its first preview step and to the final images, both tabs.

    The pipelines are called directly (never through app.py, which loads models and builds the page); wall
    seconds grow with whatever else shares the cores, the CPU seconds beside them much less.
    """
    result = {}
    for tab, pipe, settings in [("uncond", uncond_pipe, APP_UNCOND), ("txt2img", txt2img_pipe, APP_TXT2IMG)]:
        settings = {**settings, "num_inference_steps": steps}
        first, final, previews, cpu = time_request(pipe, settings, APP_PREVIEW_EVERY)
        result[tab] = {
            "first_preview_s": first,
            "final_s": final,
            "cpu_s": cpu,
            "previews": previews,
            **{k: v for k, v in settings.items() if k not in ("prompt", "negative_prompt")},
        }
        log({tab: result[tab]})
    return result


def load_shipped_pipelines(device, dtype, log) -> tuple:
    """The shipped pipelines as the app loads them (from_pretrained), with the seconds it took."""
    started, cpu_started = time.perf_counter(), time.process_time()
    uncond_pipe = UnconditionalPipeline.from_pretrained(SHIPPED_UNCOND, device=device, dtype=dtype)
    txt2img_pipe = TextToImagePipeline.from_pretrained(
        os.path.dirname(SHIPPED_TXT2IMG_UNET), device=device, dtype=dtype
    )
    seconds = {"load_s": time.perf_counter() - started, "load_cpu_s": time.process_time() - cpu_started}
    log(seconds)
    return uncond_pipe, txt2img_pipe, seconds


def bench_startup(log) -> dict:
    """Seconds from `python app.py` (a separate process) to a served page, and the CPU seconds it used."""
    startup, startup_cpu = app_startup_seconds(ROOT)
    result = {"startup_s": startup, "startup_cpu_s": startup_cpu}
    log(result)
    return result


def targets(rows: list, scheduler: dict, app: dict | None) -> list:
    """The issue's targets, each with the measured value and whether it holds."""
    checks = []
    for row in rows:
        if row["what"].startswith("DDIM") and row["batch"] in (1, 4) and row["variant"] == "eager":
            checks.append(
                {
                    "target": f"{row['model']} sampling at batch {row['batch']}: speedup >= 1.3",
                    "value": row["speedup"],
                    "holds": row["speedup"] >= 1.3,
                }
            )
        if row["what"] == "UNet forward" and row["batch"] == 8 and "ours_fraction_of_peak" in row:
            value = row["ours_fraction_of_peak"]
            checks.append(
                {
                    "target": f"{row['model']} UNet forward at batch 8: >= 65% of the matmul FLOP/s",
                    "value": value,
                    "holds": value >= 0.65,
                }
            )
    slowest = min(
        (r for r in rows if r["variant"] == "eager"), key=lambda r: r["speedup"]
    )  # the default path; compiled rows are reported
    checks.append(
        {
            "target": f"never slower than diffusers (slowest: {slowest['model']} {slowest['what']} batch {slowest['batch']})",
            "value": slowest["speedup"],
            "holds": slowest["speedup"] >= 1.0,
        }
    )
    fraction = scheduler["ours_ddim_fraction_of_step"]
    checks.append(
        {
            "target": "scheduler step < 1% of a sampling step (DDIM, batch 1)",
            "value": fraction,
            "holds": fraction < 0.01,
        }
    )
    if app is not None and app.get("startup_s") is not None:
        checks.append(
            {"target": "python app.py serves within 15 s", "value": app["startup_s"], "holds": app["startup_s"] < 15}
        )
    return checks


def format_table(result: dict) -> str:
    """The speed rows as a Markdown table, then the FLOP/s, scheduler, app and target lines."""
    lines = [
        "| model | measurement | batch | variant | ours (ms) | diffusers (ms) | speedup | speedup, CPU seconds |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        by_cpu = f"{r['speedup_cpu']:.2f}x" if "speedup_cpu" in r else "-"
        lines.append(
            f"| {r['model']} | {r['what']} | {r['batch']} | {r['variant']} | {r['ours_ms']:.1f} | {r['diffusers_ms']:.1f} "
            f"| {r['speedup']:.2f}x | {by_cpu} |"
        )
    peak = result["matmul_peak_flops_per_s"]
    lines += [
        "",
        f"Matmul peak ({result['dtype']}, {result['device']}, {result['threads']} threads): {peak / 1e9:.1f} GFLOP/s at the start; "
        "each forward below is set against the same matmul timed alongside it",
    ]
    for r in result["rows"]:
        if "flops" in r:
            lines.append(
                f"{r['model']} UNet forward, batch {r['batch']}: {r['flops'] / 1e9:.3g} GFLOP; ours {r['ours_flops_per_s'] / 1e9:.1f} GFLOP/s "
                f"({r['ours_fraction_of_peak']:.0%} of the matmul's {r['matmul_flops_per_s'] / 1e9:.1f}), "
                f"diffusers {r['diffusers_flops_per_s'] / 1e9:.1f} GFLOP/s ({r['diffusers_fraction_of_peak']:.0%})"
            )
    for r in result["rows"]:
        if r.get("ours_convolutions"):
            c = r["ours_convolutions"]
            lines.append(
                f"{r['model']} UNet forward, batch {r['batch']}: our convolutions ran {c['packed']} on packed oneDNN weights, "
                f"{c['plain']} as nn.Conv2d"
            )
    s = result["scheduler"]
    lines.append(
        f"Scheduler step at batch 1: ours DDIM {s['ours_ddim_step_ms']:.3f} ms ({s['ours_ddim_fraction_of_step']:.2%} of a step), "
        f"DDPM {s['ours_ddpm_step_ms']:.3f} ms; diffusers DDIM {s['diffusers_ddim_step_ms']:.3f} ms, DDPM {s['diffusers_ddpm_step_ms']:.3f} ms; "
        f"UNet forward {s['unet_forward_ms']:.1f} ms"
    )
    for name, p in result["parameters"].items():
        lines.append(f"Parameters, {name}: ours {p['ours']:,}, diffusers {p['diffusers']:,} (ratio {p['ratio']:.4f})")
    app = result.get("app")
    if app:
        lines.append(
            f"App: `python app.py` serves after {app['startup_s']:.1f} s ({app['startup_cpu_s']:.1f} CPU s)"
            if app.get("startup_s")
            else "App: did not serve"
        )
    requests = result["requests"]
    if "load_s" in requests:
        lines.append(
            f"Loading both shipped pipelines (from_pretrained): {requests['load_s']:.2f} s ({requests['load_cpu_s']:.2f} CPU s)"
        )
    for tab in ("uncond", "txt2img"):
        a = requests[tab]
        first = "none" if a["first_preview_s"] is None else f"{a['first_preview_s']:.2f} s"
        lines.append(
            f"Request {tab} (app defaults: DDIM {a['num_inference_steps']} steps, {a['num_images']} images): "
            f"first preview {first}, images {a['final_s']:.2f} s ({a['cpu_s']:.1f} CPU s)"
        )
    lines.append("")
    for check in result["targets"]:
        lines.append(f"[{'holds' if check['holds'] else 'MISSES'}] {check['target']}: {check['value']:.3g}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tiny", action="store_true", help="tiny models and few repeats: checks that everything runs, in seconds"
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--dtype", default="float32", choices=tuple(DTYPES), help="the UNets' dtype (x_t stays float32 in our loops)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="also time both UNets under torch.compile (reported as separate rows)"
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="also time torch.compile(mode='reduce-overhead'), which captures CUDA graphs",
    )
    parser.add_argument(
        "--app",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time `python app.py` to a served page, in its own process (default: on, except with --tiny)",
    )
    parser.add_argument(
        "--out", default=None, help="JSON file to write (default: bench/results_DEVICE.json; none with --tiny)"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device here")
    if args.cuda_graphs and args.device != "cuda":
        raise ValueError("--cuda-graphs needs --device cuda")
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    plan = TINY if args.tiny else FULL
    variants = ["eager"] + (["compiled"] if args.compile else []) + (["cuda graphs"] if args.cuda_graphs else [])
    log = (lambda item: None) if args.tiny else (lambda item: print(json.dumps(item, default=str), flush=True))
    torch.manual_seed(0)

    peak, per_size = matmul_peak(device, dtype, plan["matmul_sizes"], plan["matmul_repeats"])
    result = {
        "device": str(device),
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "tiny": args.tiny,
        "variants": variants,
        "cpu": cpu_name(),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "torch": torch.__version__,
        "diffusers": __import__("diffusers").__version__,
        "matmul_peak_flops_per_s": peak,
        "matmul_flops_per_s_by_size": per_size,
    }
    if device.type == "cuda" and dtype != torch.bfloat16:  # the card's bf16 rate, to state the UNet's rate against
        result["bf16_matmul_peak_flops_per_s"] = matmul_peak(device, torch.bfloat16, (4096, 8192), 5)[0]
    log({"matmul_peak_gflops": peak / 1e9})

    if args.tiny:  # random weights
        uncond_config, txt2img_config, text_encoder = tiny_models()
        uncond_weights = txt2img_weights = None
    else:  # the shipped models (read only), their weights copied into diffusers' twins
        uncond_config, txt2img_config = shipped_uncond_config(), shipped_txt2img_config()
        text_encoder = TextEncoder.from_pretrained(SHIPPED_CLIP)
        uncond_weights, txt2img_weights = SHIPPED_UNCOND, SHIPPED_TXT2IMG_UNET
    text_encoder.text_model.to(device)
    uncond_ours, uncond_theirs = uncond_pair(uncond_config, weights=uncond_weights)
    txt2img_ours, txt2img_theirs = txt2img_pair(txt2img_config, weights=txt2img_weights)
    result["weights"] = {
        name: os.path.relpath(w, ROOT) if w else "random"
        for name, w in (("uncond", uncond_weights), ("txt2img", txt2img_weights))
    }
    result["parameters"] = {
        name: {
            "ours": count_parameters(o),
            "diffusers": count_parameters(t),
            "ratio": count_parameters(o) / count_parameters(t),
        }
        for name, o, t in [("uncond", uncond_ours, uncond_theirs), ("txt2img", txt2img_ours, txt2img_theirs)]
    }
    result["convolutions"] = {  # our Conv2d modules: how many each forward runs (see the rows' ours_convolutions)
        name: sum(isinstance(m, Conv2d) for m in model.modules())
        for name, model in (("uncond", uncond_ours), ("txt2img", txt2img_ours))
    }
    for model in (uncond_ours, uncond_theirs, txt2img_ours, txt2img_theirs):
        model.to(device)
        if dtype != torch.float32:  # (diffusers warns on any dtype cast, even to float32)
            model.to(dtype)
    uncond_schedule, txt2img_schedule = load_scheduler_config("uncond"), load_scheduler_config("txt2img")

    def image_inputs(config, batch):
        x = torch.randn(batch, config.in_channels, config.sample_size, config.sample_size, device=device, dtype=dtype)
        return x, torch.tensor(500, device=device)

    def uncond_inputs(batch):
        return (*image_inputs(uncond_config, batch), {})

    def txt2img_inputs(batch):
        embeddings = text_encoder.encode([PROMPT] * batch)
        states = embeddings.hidden_states.to(
            device=device, dtype=dtype
        ).clone()  # a plain tensor, usable in training (encode runs in inference mode)
        return (
            *image_inputs(txt2img_config, batch),
            {"encoder_hidden_states": states, "encoder_attention_mask": embeddings.attention_mask.to(device)},
        )

    def uncond_sampling(ours, theirs, batch):
        ours_pipe = UnconditionalPipeline(ours, uncond_schedule)
        theirs_pipe = diffusers_ddim_pipeline(theirs, uncond_schedule)
        return (
            lambda: ours_pipe(num_images=batch, num_inference_steps=plan["steps"], scheduler="ddim", seed=0).images,
            lambda: (
                theirs_pipe(
                    batch_size=batch,
                    generator=torch.Generator().manual_seed(0),
                    eta=0.0,
                    num_inference_steps=plan["steps"],
                    output_type="pil",
                ).images
            ),
        )

    def txt2img_sampling(ours, theirs, batch):
        from diffusers import DDIMScheduler

        ours_pipe = TextToImagePipeline(ours, text_encoder, txt2img_schedule)
        theirs_scheduler = DDIMScheduler.from_config(txt2img_schedule)
        return (
            lambda: (
                ours_pipe(
                    PROMPT, num_images=batch, num_inference_steps=plan["steps"], guidance_scale=GUIDANCE_SCALE, seed=0
                ).images
            ),
            lambda: diffusers_text_to_image(
                theirs, theirs_scheduler, text_encoder, PROMPT, batch, plan["steps"], GUIDANCE_SCALE, seed=0
            ),
        )

    # the best matmul of the sweep runs alongside every forward timing, so each FLOP/s compares with a peak measured under the same load
    n = max(per_size, key=per_size.get)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    matmul, matmul_flops = (lambda: torch.mm(a, b)), 2 * n**3
    rows = bench_pair(
        "uncond",
        uncond_ours,
        uncond_theirs,
        uncond_inputs,
        uncond_sampling,
        plan,
        device,
        variants,
        matmul,
        matmul_flops,
        log,
    )
    rows += bench_pair(
        "txt2img",
        txt2img_ours,
        txt2img_theirs,
        txt2img_inputs,
        txt2img_sampling,
        plan,
        device,
        variants,
        matmul,
        matmul_flops,
        log,
    )
    if device.type == "cuda":
        result["host_waits_in_loop"] = check_no_syncs(
            uncond_ours, txt2img_ours, text_encoder, uncond_schedule, txt2img_schedule, plan["steps"], device
        )
        log({"host_waits_in_loop": result["host_waits_in_loop"]})
    result["scheduler"] = bench_scheduler(uncond_ours, uncond_schedule, plan, device, dtype, log)
    rows.append(bench_training("uncond", uncond_ours, uncond_theirs, uncond_inputs, uncond_schedule, plan, device, log))
    rows.append(
        bench_training("txt2img", txt2img_ours, txt2img_theirs, txt2img_inputs, txt2img_schedule, plan, device, log)
    )
    result["rows"] = rows
    if args.tiny:  # the tiny models behind the pipelines, at a few more steps than the loops above (previews every 5)
        uncond_pipe = UnconditionalPipeline(uncond_ours, uncond_schedule)
        txt2img_pipe = TextToImagePipeline(txt2img_ours, text_encoder, txt2img_schedule)
        loading = {}
    else:
        uncond_pipe, txt2img_pipe, loading = load_shipped_pipelines(device, dtype, log)
    result["requests"] = {**loading, **bench_requests(uncond_pipe, txt2img_pipe, plan["request_steps"], log)}
    run_app = args.app if args.app is not None else not args.tiny
    result["app"] = bench_startup(log) if run_app and device.type == "cpu" else None
    result["targets"] = targets(rows, result["scheduler"], result["app"])

    print(format_table(result))
    out = args.out or (None if args.tiny else os.path.join(ROOT, "bench", f"results_{device.type}.json"))
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return result


if __name__ == "__main__":
    main()
