"""The served app under load: 32 clients send 4 mixed requests each (both tabs, some through the upsampler, image to
image, inpainting, strips, grids, live pictures); every answer is there and is its own request's.

    python -m pytest -m load -s tests/test_load.py      # what .ci/run runs after the default suite

Starts `python app.py` with the shipped models on a free loopback port. Few steps and one image per request,
so it takes a few minutes on one core. Also fills the queue past its maximum (read from the page) to see the
"busy, try again" answer, and stops the job that held the queue to see the worker freed.
Prints the figures: requests sent and answered, errors, peak memory of the server, longest wait.
"""

import functools
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import httpx
import pytest
from PIL import Image

from tests.serving import ROOT, free_port, wait_for_port
from webapp.grid_picture import cell_box

pytestmark = pytest.mark.load

CLIENTS = 32
REQUESTS_PER_CLIENT = 4
STEPS = 3
IDLE_REFERENCES = (
    6  # requests also answered on the idle server first: the same seed must give the same pixels under load
)
DEADLINE_SECONDS = 300  # the whole load phase; a hung server fails the test instead of hanging it
PEAK_MEMORY_LIMIT_MB = 2500  # the server's peak resident memory (VmHWM)
MODEL = "emoji (shipped)"
PROMPTS = ["red heart", "cat face", "pizza", "flag: Japan", "rocket", "sun", "grinning face", "blue heart"]
SEED_AT = {"/unconditional": 5, "/text_to_image": 7, "/image_to_image": 9, "/inpaint": 8}  # the seed's argument
UPSCALE_AT = {"/unconditional": 8, "/text_to_image": 14}  # the upscale argument's
UPSCALE_STEPS = 2
SCHEDULER_LABELS = ["DDIM", "DDPM", "Euler (diffusers)", "DPM-Solver++ (diffusers)"]


@functools.cache
def edit_files() -> tuple[str, str]:
    """The picture the edit requests start from (a shipped example) and a paint layer over its right half."""
    picture = os.path.join(ROOT, "assets", "examples", "red_heart.png")
    layer = Image.new("RGBA", Image.open(picture).size, (0, 0, 0, 0))
    layer.paste((255, 0, 255, 255), (layer.width // 2, 0, layer.width, layer.height))
    path = os.path.join(tempfile.mkdtemp(prefix="load-test-"), "layer.png")
    layer.save(path)
    return picture, path


def request_for(client: int, i: int) -> tuple[str, tuple]:
    """The i-th request of a client: endpoints, schedulers and prompts mixed; each with its own seed (and prompt).

    One request in eight is a two-frame strip (/interpolate), one a one-cell grid (/compare), one a live picture; the
    others go round the two tabs (every other one through the upsampler, 2 steps), image to image and inpainting."""
    from gradio_client import handle_file

    seed = 1000 * client + i
    scheduler = SCHEDULER_LABELS[(client + i) % len(SCHEDULER_LABELS)]
    slot = (client * REQUESTS_PER_CLIENT + i) % 8
    prompt = f"{PROMPTS[(client * REQUESTS_PER_CLIENT + i) % len(PROMPTS)]} {client}.{i}"
    if slot == 3:
        return "/interpolate", ("Text to image", MODEL, prompt, "", 3.0, seed, "Two seeds", seed + 1, "", 2,
                                scheduler, STEPS, 0.0)  # fmt: skip
    if slot == 5:
        return "/compare", ("Unconditional", MODEL, "", "", 3.0, seed, ["DDIM, eta 0"], [5])
    if slot == 7:
        return "/live", (True, prompt, "", 3.0, seed, "any")
    kind = (client + i) % 4
    extra = (1, 0.0, client % 2 == 0, UPSCALE_STEPS, 50)  # variation off; upscaled for even clients
    if kind == 0:
        return "/unconditional", (MODEL, scheduler, STEPS, 0.0, 1, seed, *extra)
    if kind == 1:
        return "/text_to_image", (prompt, "", 3.0, scheduler, STEPS, 0.0, 1, seed, False, 0.995, 1.5, "any", *extra)
    picture, layer = edit_files()
    if kind == 2:  # every scheduler; strength 1 so that all STEPS run
        sketch = {"background": None, "layers": [], "composite": handle_file(picture)}
        return "/image_to_image", (sketch, prompt, "", 3.0, 1.0, scheduler, STEPS, 0.0, 1, seed)
    painted = {"background": handle_file(picture), "layers": [handle_file(layer)], "composite": None}
    inpaint_scheduler = SCHEDULER_LABELS[(client + i) % 2]  # DDIM or DDPM: RePaint goes back up the chain
    return "/inpaint", (painted, prompt, "", 3.0, inpaint_scheduler, STEPS, 0.0, 1, seed, 1, 2)


@dataclass
class Answer:
    endpoint: str
    args: tuple
    seconds: float  # from sending to the answer: queue wait plus sampling
    pixels: bytes | None = None
    error: str | None = None


def fetch_png(entry: dict) -> Image.Image:
    """A gallery entry's (or an image's) PNG as the browser gets it (the clients do not download every file: that
    would load the core)."""
    response = httpx.get(entry["image"]["url"] if "image" in entry else entry["url"], timeout=60)
    response.raise_for_status()
    return Image.open(io.BytesIO(response.content))


def check_explore_answer(endpoint: str, args: tuple, output) -> bytes:
    """An Explore or Live answer names its own request's seed (and prompt, other seed); returns its first picture's pixels."""
    if endpoint == "/interpolate":
        frames, animations, settings_json = output
        frame_settings = json.loads(settings_json)["frames"]
        assert len(frames) == 2 and len(animations) == 2, args
        assert [f["seed"] for f in frame_settings] == [args[5]] * 2 and frame_settings[-1]["variation_seed"] == args[7]
        png = fetch_png(frames[0])
        assert png.text["prompt"] == args[2] and frame_settings[0]["steps"] == STEPS, (args, frame_settings)
    elif endpoint == "/compare":
        grid, table, settings_json = output
        settings = json.loads(settings_json)
        assert settings["seed"] == args[5] and settings["steps"] == [5] and table["data"][0][0] == args[6][0], args
        png = fetch_png(grid)
        return png.crop(cell_box(0, 0, size=32)).tobytes()  # the cell's picture, not the seconds drawn under it
    else:  # /live: a client's own request is never superseded (each client is a session, sending one at a time)
        picture, settings_json = output
        settings = json.loads(settings_json)
        png = fetch_png(picture)
        assert settings["prompt"] == args[1] and settings["seed"] == args[4] and png.text["prompt"] == args[1], args
    return png.tobytes()


def check_answer(endpoint: str, args: tuple, output, fetch_strip: bool = False) -> bytes:
    """The answer names its own request's seed (and prompt) in the page and in the PNG; returns its pixels."""
    if endpoint in ("/interpolate", "/compare", "/live"):
        return check_explore_answer(endpoint, args, output)
    gallery, settings_json, seed, strip, _ = output
    settings = json.loads(settings_json)
    png = fetch_png(gallery[0])
    asked = args[SEED_AT[endpoint]]
    assert seed == asked and settings["seed"] == asked and png.text["seed"] == str(asked), (args, settings)
    assert settings["steps"] == STEPS and len(gallery) == 1
    upscaled = endpoint in UPSCALE_AT and args[UPSCALE_AT[endpoint]]
    assert settings["size"] == (128 if upscaled else 32), (args, settings)  # the PNG is 128 px either way (shown 4x)
    if endpoint != "/unconditional":
        prompt = args[0] if endpoint == "/text_to_image" else args[1]
        assert settings["prompt"] == prompt and png.text["prompt"] == prompt, (args, settings)
    if endpoint == "/inpaint":
        assert settings["inpainting"] is True, (args, settings)
    for entry in strip if fetch_strip else []:  # the same frames for every request with this seed: each file whole
        fetch_png(entry).load()
    return png.tobytes()


def ask(client, endpoint: str, args: tuple) -> Answer:
    started = time.monotonic()
    try:
        output = client.predict(*args, api_name=endpoint)
        return Answer(endpoint, args, time.monotonic() - started, pixels=check_answer(endpoint, args, output))
    except Exception as error:  # counted and shown below, not raised: one failure must not hide the others
        return Answer(endpoint, args, time.monotonic() - started, error=f"{type(error).__name__}: {error}")


def run_client(url: str, client: int) -> list[Answer]:
    from gradio_client import Client

    # 32 clients read the page's config at once from a busy server: more than httpx's default 5 s may pass
    connection = Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 60})
    return [ask(connection, *request_for(client, i)) for i in range(REQUESTS_PER_CLIENT)]


def memory_mb(pid: int) -> dict:
    """Resident memory now and at its peak (VmRSS, VmHWM), in MB, and the thread count, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {
        "rss": int(fields["VmRSS"].split()[0]) / 1024,
        "peak": int(fields["VmHWM"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
    }


def queue_limits(url: str) -> tuple[int, int]:
    """(generations at a time, most waiting) as the page states them."""
    config = httpx.get(url + "config").text
    match = re.search(r"(\d+) generation\(s\) at a time, up to (\d+) waiting", config)
    assert match, "the page states its queue limits"
    return int(match.group(1)), int(match.group(2))


def test_32_clients_get_every_answer_their_own_and_the_queue_says_busy_beyond_its_size(tmp_path):
    from gradio_client import Client
    from gradio_client.utils import Status

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "server.log", "w")  # a file, not a pipe: a full pipe would stall the server under load
    server = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
    )
    try:
        started = time.monotonic()
        wait_for_port(server, port, timeout=180)
        startup_seconds = time.monotonic() - started
        concurrency, queue_size = queue_limits(url)

        # the idle server: reference pixels for the first requests of client 0 and 1
        idle_client = Client(url, verbose=False, download_files=False)
        plan = [request_for(client, i) for client in range(CLIENTS) for i in range(REQUESTS_PER_CLIENT)]
        idle = [ask(idle_client, *request) for request in plan[:IDLE_REFERENCES]]
        assert all(answer.error is None for answer in idle), [answer.error for answer in idle]
        before = memory_mb(server.pid)

        # the load: 32 clients at once, 4 requests each
        load_started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(run_client, url, client) for client in range(CLIENTS)]
            done, not_done = wait(futures, timeout=DEADLINE_SECONDS)
        assert not not_done, f"{len(not_done)} clients had no answers after {DEADLINE_SECONDS} s"
        answers = [answer for future in futures for answer in future.result()]
        load_seconds = time.monotonic() - load_started
        after_load = memory_mb(server.pid)

        # beyond the queue's size: hold every worker with a long job, then send queue_size + 4 short requests at once
        busy = Client(url, verbose=False, max_workers=queue_size + 8, download_files=False)
        long_jobs = [
            busy.submit(MODEL, "DDPM", 1000, 0.0, 16, 7 + n, api_name="/unconditional") for n in range(concurrency)
        ]
        deadline = time.monotonic() + 60
        while not all(job.status().code in (Status.PROCESSING, Status.ITERATING, Status.PROGRESS) for job in long_jobs):
            assert time.monotonic() < deadline, "the long jobs did not start"
            time.sleep(0.1)
        extra = 4
        short = [busy.submit(*request_for(0, 0)[1], api_name=request_for(0, 0)[0]) for _ in range(queue_size + extra)]
        deadline = time.monotonic() + 60
        while sum(job.status().code in (Status.IN_QUEUE, Status.QUEUE_FULL) or job.done() for job in short) < len(
            short
        ):
            assert time.monotonic() < deadline, "the short jobs were neither queued nor refused"
            time.sleep(0.1)
        stop_pressed = time.monotonic()
        for job in long_jobs:
            job.cancel()  # Stop: the queued requests get the worker
        busy_results = []
        for job in short:
            try:
                output = job.result(timeout=DEADLINE_SECONDS)
                busy_results.append(check_answer("/unconditional", request_for(0, 0)[1], output, fetch_strip=True))
            except Exception as error:
                busy_results.append(f"{type(error).__name__}: {error}")
        queue_drained = time.monotonic() - stop_pressed
        after = memory_mb(server.pid)

        errors = [answer for answer in answers if answer.error is not None]
        waits = sorted(answer.seconds for answer in answers)
        refused = [result for result in busy_results if isinstance(result, str)]
        print(
            f"\nLOAD: server started in {startup_seconds:.1f} s; {concurrency} generation(s) at a time, queue of {queue_size}\n"
            f"LOAD: {len(plan)} requests from {CLIENTS} clients sent, {len(answers) - len(errors)} answered correctly, "
            f"{len(errors)} errors, in {load_seconds:.1f} s ({len(answers) / load_seconds:.2f} requests/s)\n"
            f"LOAD: wait per request: median {statistics.median(waits):.2f} s, longest {waits[-1]:.2f} s\n"
            f"LOAD: busy check: {len(short)} sent beyond the running job(s), {len(short) - len(refused)} answered, "
            f"{len(refused)} refused ({refused[0] if refused else '-'}); queue drained {queue_drained:.1f} s after Stop\n"
            f"LOAD: server memory: {before['rss']:.0f} MB before the load, {after_load['rss']:.0f} MB after it, "
            f"{after['rss']:.0f} MB at the end; peak {after['peak']:.0f} MB; threads {before['threads']} -> {after['threads']}"
        )
        assert not errors, errors[:3]
        assert len(answers) == len(plan)
        for reference in idle:  # the same seed, the same pixels, idle or loaded
            loaded = next(answer for answer in answers if answer.args == reference.args)
            assert loaded.pixels == reference.pixels, reference.args
        assert len(refused) == extra and all("Queue is full! Please try again." in result for result in refused), (
            busy_results
        )
        assert after["peak"] < PEAK_MEMORY_LIMIT_MB
        assert server.poll() is None, "the server is still up"
    except BaseException:
        print((tmp_path / "server.log").read_text()[-5000:])  # the server's side of a failure
        raise
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
