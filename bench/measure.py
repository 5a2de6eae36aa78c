"""What the benchmark measures with: side-by-side timing, the matmul peak, FLOP counts, and diffusers' reference loops.

Timings are ratios taken in one process: the candidates run alternately (the order rotates every round, so
neither side always runs on a warm cache or right after the other's garbage), after warm-up, and the
median of the repeats is kept.
"""

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from uncond.images import to_pil


def synchronize(device) -> None:
    """Wait for queued device work, so a host clock measures it (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def compare(candidates: dict, repeats: int, device="cpu", warmup: int = 1) -> dict:
    """Median seconds of each zero-argument callable in `candidates` (see `time_alternately`)."""
    return {
        name: statistics.median(times) for name, times in time_alternately(candidates, repeats, device, warmup).items()
    }


def time_alternately(candidates: dict, repeats: int, device="cpu", warmup: int = 1, cpu: dict | None = None) -> dict:
    """Seconds of every run of each zero-argument callable in `candidates`, run alternately `repeats` times after `warmup` runs.

    `cpu`, if given, receives each run's CPU seconds of the calling thread: with one intra-op thread that is all
    of a run's work, and (unlike the wall seconds) it hardly grows when other programs share the cores.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    synchronize(device)
    seconds = {name: [] for name in names}
    cpu_seconds = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate who goes first
            started, cpu_started = time.perf_counter(), time.thread_time()
            candidates[name]()
            synchronize(device)
            seconds[name].append(time.perf_counter() - started)
            cpu_seconds[name].append(time.thread_time() - cpu_started)
    if cpu is not None:
        cpu.update(cpu_seconds)
    return seconds


def matmul_peak(device="cpu", dtype=torch.float32, sizes=(512, 1024, 2048), repeats: int = 5) -> tuple[float, dict]:
    """This machine's matmul rate (FLOP/s): median over repeats of square n x n products, best n; and the rate per n."""
    rates = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        seconds = compare({"mm": lambda: torch.mm(a, b)}, repeats, device, warmup=2)["mm"]
        rates[n] = 2 * n**3 / seconds  # n^2 dot products of length n, a multiply and an add each
    return max(rates.values()), rates


def count_flops(fn) -> int:
    """FLOPs of one call of `fn` (convolutions, matmuls, attention), counted by torch.utils.flop_counter."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def time_steps(run_steps, steps: int, repeats: int, device="cpu") -> float:
    """Median seconds per step of `run_steps()`, which runs `steps` steps."""
    return compare({"steps": run_steps}, repeats, device, warmup=1)["steps"] / steps


def host_waits_for_device(run) -> str | None:
    """None if `run()` never makes the host wait for the GPU, else the error torch.cuda's sync debug mode raised."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        run()
        return None
    except RuntimeError as error:
        return str(error)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ---- diffusers' side of each comparison ----


def diffusers_ddim_pipeline(unet, scheduler_config: dict):
    """diffusers' own DDIMPipeline around `unet`, with the schedule of our model folder; no progress bar."""
    from diffusers import DDIMPipeline, DDIMScheduler

    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def diffusers_text_to_image(
    unet,
    scheduler,
    text_encoder,
    prompt: str,
    num_images: int,
    num_inference_steps: int,
    guidance_scale: float,
    seed: int = 0,
) -> list:
    """The guided DDIM loop as diffusers' text-to-image pipelines write it, on diffusers' UNet and scheduler; PIL images.

    Same text encoder, noise and rule as ours (eps from the clipped x_0 when guided), so the images agree with ours.
    """
    device, dtype = unet.device, unet.dtype
    embeddings = text_encoder.encode([prompt, ""])  # one call for the prompt and the unconditional (empty) prompt
    cond_states, uncond_states = embeddings.hidden_states.to(dtype).repeat_interleave(num_images, dim=0).chunk(2)
    cond_mask, uncond_mask = embeddings.attention_mask.repeat_interleave(num_images, dim=0).chunk(2)
    hidden_states = torch.cat([uncond_states, cond_states])  # (2B, L, D): unconditional rows first
    attention_mask = torch.cat([uncond_mask, cond_mask])
    config = unet.config
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(
        (num_images, config.in_channels, config.sample_size, config.sample_size), generator=generator
    ).to(device, dtype)
    scheduler.set_timesteps(num_inference_steps)
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        noise_pred = unet(
            model_input, t, encoder_hidden_states=hidden_states, encoder_attention_mask=attention_mask
        ).sample
        noise_uncond, noise_cond = noise_pred.chunk(2)
        noise_pred = noise_uncond + guidance_scale * (noise_cond - noise_uncond)
        latents = scheduler.step(noise_pred, t, latents, eta=0.0, use_clipped_model_output=True).prev_sample
    return to_pil(latents)


# ---- one training step ----


def training_step(model, optimizer, loss_fn) -> None:
    """Forward, backward and optimizer update of one batch; `loss_fn(model)` returns the loss."""
    loss = loss_fn(model)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def diffusers_diffusion_loss(model, scheduler, x_0, generator, **model_kwargs) -> torch.Tensor:
    """The simplified DDPM loss with diffusers' scheduler and UNet (as diffusers' training examples write it)."""
    noise = torch.randn(x_0.shape, generator=generator).to(x_0.device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (x_0.shape[0],), generator=generator).to(
        x_0.device
    )
    x_t = scheduler.add_noise(x_0, noise, timesteps)
    return F.mse_loss(model(x_t, timesteps, **model_kwargs).sample.float(), noise.float())


# ---- the app ----


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served_app(root: str, timeout: float = 180.0):
    """Run `python app.py` in `root` on a free port for the `with` block: yields (port, env, seconds until its page
    answered HTTP 200); raises RuntimeError if it exits first or does not answer within `timeout`."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "app.py"], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"app.py exited with {server.returncode} before serving")
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"app.py did not serve within {timeout:.0f} s")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        yield port, env, time.perf_counter() - started
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def app_startup_seconds(root: str, timeout: float = 120.0) -> tuple[float | None, float]:
    """Seconds from `python app.py` to its page answering HTTP 200 (None if not within `timeout`), and the CPU seconds the app used.

    The CPU seconds (the app is stopped as soon as it answers) do not grow when other programs share the cores; the wall time does.
    """
    import resource

    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        with served_app(root, timeout) as (_, _, ready):
            pass
    except RuntimeError:
        ready = None
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ready, (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)


def time_request(pipe, settings: dict, preview_every: int) -> tuple[float | None, float, int, float]:
    """(seconds to the first preview step, seconds to the final images, preview steps seen, CPU seconds) of one `pipe(**settings)`.

    A preview step is what the app shows a preview at: every `preview_every` steps, the last step excepted.
    """
    total = settings["num_inference_steps"]
    started, cpu_started = time.perf_counter(), time.process_time()
    first, previews = None, 0

    def callback(step, t, x_t, pred_original_sample):
        nonlocal first, previews
        if (step + 1) % preview_every == 0 and step + 1 < total:
            pred_original_sample.float().cpu()  # what the app hands its page (a copy on a GPU)
            previews += 1
            if first is None:
                first = time.perf_counter() - started
        return False

    pipe(**settings, callback=callback)
    return first, time.perf_counter() - started, previews, time.process_time() - cpu_started
