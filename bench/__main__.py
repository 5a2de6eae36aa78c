"""Benchmark: our UNets, sampling loops and training step against diffusers' at the same architecture, in one run.

    python -m bench                                  # the shipped architectures on the CPU, writes bench/results_cpu.json
    OMP_NUM_THREADS=1 taskset -c 1 python -m bench   # pinned to one core
    python -m bench --tiny --out /tmp/bench.json     # a tiny configuration in seconds (what the test runs)
    python -m bench --device cuda --dtype bfloat16 --compile --cuda-graphs --out bench/results_cuda.json
    python -m bench soak --minutes 30 --clients 3    # the served app over a long run: memory flat? (bench/soak.py)

Every speed is a ratio of medians measured side by side (see bench/measure.py): "speedup" is diffusers' time
over ours, so > 1 means ours is faster. Both models of a pair hold the same weights (bench/models.py), and the
sampling rows also report how far apart the two libraries' images are (max pixel difference, 0..255).
Here: the run plan and `main`; bench/suites.py measures, bench/app_timings.py times the pipelines as the app
calls them (never importing app.py), bench/report.py checks the targets and prints the table.
"""

import argparse
import json
import os
import platform
import sys

import torch

from bench.app_timings import bench_live, bench_requests, bench_startup, load_shipped_pipelines
from bench.cascade import bench_cascade, cascade_target, shipped_upscaler, tiny_upscaler
from bench.live_page import bench_live_page
from bench.measure import (
    diffusers_ddim_pipeline,
    diffusers_text_to_image,
    matmul_peak,
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
from bench.report import format_table, targets
from bench.suites import GUIDANCE_SCALE, PROMPT, bench_pair, bench_scheduler, bench_training, check_no_syncs
from txt2img.clip import TextEncoder
from txt2img.pipeline import TextToImagePipeline
from txt2img.unet import TextUNetConfig
from uncond.conv import Conv2d
from uncond.pipeline import UnconditionalPipeline
from uncond.unet import UNetConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
    cascade_repeats=3,
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
    cascade_repeats=1,
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
                ours_pipe(  # the prompt as typed, as diffusers' loop gets it (no colour style added)
                    PROMPT,
                    num_images=batch,
                    num_inference_steps=plan["steps"],
                    guidance_scale=GUIDANCE_SCALE,
                    seed=0,
                    add_style=False,
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
    up = (
        tiny_upscaler(uncond_config.sample_size, load_scheduler_config("uncond"))
        if args.tiny
        else shipped_upscaler(ROOT, device, dtype)
    )
    pipes = {"uncond": uncond_pipe, "txt2img": txt2img_pipe}
    result["cascade"] = (
        bench_cascade(pipes, up, plan["request_steps"], plan["cascade_repeats"], matmul, matmul_flops, device, log)
        if up is not None
        else None
    )
    result["requests"]["live"] = bench_live(txt2img_pipe, log)
    run_app = args.app if args.app is not None else not args.tiny
    result["app"] = bench_startup(log) if run_app and device.type == "cpu" else None
    result["requests"]["live_page"] = bench_live_page(log) if run_app and device.type == "cpu" else None
    requests = result["requests"]
    result["targets"] = targets(
        rows, result["scheduler"], result["app"], requests["live"], requests["live_page"]
    ) + cascade_target(result["cascade"])

    print(format_table(result))
    out = args.out or (None if args.tiny else os.path.join(ROOT, "bench", f"results_{device.type}.json"))
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["soak"]:  # python -m bench soak ...: the served app over a long run (bench/soak.py)
        from bench.soak import main as soak_main

        soak_main(sys.argv[2:])
    else:
        main()
