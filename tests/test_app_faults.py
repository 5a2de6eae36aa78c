"""The app under faults and attacks: broken weights at start, out of memory, Stop and lost clients, hostile files, what is served."""

import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib

import gradio as gr
import httpx
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import app
from tests.serving import ROOT, free_port
from uncond.pipeline import SampleOutput
from uncond.sampling import Step
from webapp import startup
from webapp.restore import TEXT_CONTROLS

WEIGHTS = os.path.join(ROOT, "weights")
STEP_SECONDS = 0.2  # one step of the stand-in pipeline


# ---- missing or broken weights at start: one message naming the folder and the command that rebuilds it ----


def weights_with(tmp_path, broken: str, damage) -> str:
    """A weights folder: `broken` copied and damaged by `damage(path)`, the others linked to the shipped ones
    (txt2img always copied: its pipeline.json names ../clip, which through a link would be the shipped CLIP)."""
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("uncond", "txt2img", "clip"):
        if name == broken or name == "txt2img":
            shutil.copytree(os.path.join(WEIGHTS, name), weights / name)
        else:
            os.symlink(os.path.join(WEIGHTS, name), weights / name)
    damage(weights / broken)
    return str(weights)


def truncate(path):
    path.write_bytes(path.read_bytes()[:1000])


@pytest.mark.parametrize(
    "broken, damage, command",
    [
        ("uncond", shutil.rmtree, "python -m uncond.train --data data/emoji-colour/32"),
        ("uncond", lambda folder: truncate(folder / "model.safetensors"), "python -m uncond.train"),
        ("uncond", lambda folder: (folder / "config.json").write_text("{not json"), "python -m uncond.train"),
        (
            "txt2img",
            lambda folder: truncate(folder / "unet" / "model.safetensors"),
            "python -m txt2img.train --data data/emoji-multi/32 --clip",
        ),
        ("txt2img", lambda folder: (folder / "pipeline.json").write_text("]"), "python -m txt2img.train"),
        ("clip", shutil.rmtree, "python -m txt2img.train_clip --data data/emoji"),
        ("clip", lambda folder: truncate(folder / "model.safetensors"), "python -m txt2img.train_clip"),
    ],
)
def test_broken_weights_stop_the_start_naming_the_folder_and_the_rebuild_command(tmp_path, broken, damage, command):
    weights = weights_with(tmp_path, broken, damage)
    with pytest.raises(SystemExit) as stopped:
        startup.load_models(weights, [])
    message = str(stopped.value)
    assert (
        message.startswith("Cannot start: the ")
        and f"in {os.path.join(weights, broken)} is missing or unreadable" in message
    )
    assert command in message and f"--out {os.path.join(weights, broken)}" in message


@pytest.mark.slow
def test_the_app_exits_non_zero_with_that_message_and_no_traceback(tmp_path):
    env = {**os.environ, "EMOJI_WEIGHTS_DIR": str(tmp_path / "nothing here"), "GRADIO_SERVER_PORT": str(free_port())}
    run = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert f"Cannot start: the unconditional model in {tmp_path / 'nothing here' / 'uncond'} is missing" in run.stderr
    assert "python -m uncond.train" in run.stderr and "Traceback" not in run.stderr


# ---- device, precision and queue ----


def test_precision_and_queue_follow_the_device(monkeypatch):
    assert startup.default_dtype(torch.device("cpu")) == torch.float32
    assert startup.default_dtype(torch.device("cuda", 0)) == torch.float16
    for name in ("EMOJI_CONCURRENCY", "EMOJI_QUEUE_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert startup.queue_settings(torch.device("cpu")) == (1, 32)
    assert startup.queue_settings(torch.device("cuda")) == (4, 64)
    monkeypatch.setenv("EMOJI_QUEUE_SIZE", "3")
    assert startup.queue_settings(torch.device("cpu")) == (1, 3)
    monkeypatch.setenv("EMOJI_CONCURRENCY", "0")
    with pytest.raises(SystemExit, match="EMOJI_CONCURRENCY must be a positive whole number, got '0'"):
        startup.queue_settings(torch.device("cpu"))
    assert app.DEVICE_NOTE.startswith("Running on **CPU** in float32; 1 generation(s) at a time")


def test_on_cuda_the_models_load_in_fp16_and_the_page_says_so(monkeypatch):
    loaded = []

    def record(kind):
        def from_pretrained(path, device=None, dtype=None):
            loaded.append((kind, os.path.basename(path), device, dtype))
            return object()

        return from_pretrained

    from txt2img.pipeline import TextToImagePipeline

    monkeypatch.setattr(startup, "default_device", lambda: torch.device("cuda", 0))
    monkeypatch.setattr(startup.UnconditionalPipeline, "from_pretrained", record("uncond"))
    monkeypatch.setattr(TextToImagePipeline, "from_pretrained", record("txt2img"))
    startup.load_models(WEIGHTS, [])
    assert loaded == [
        ("uncond", "uncond", torch.device("cuda", 0), torch.float16),
        ("txt2img", "txt2img", torch.device("cuda", 0), torch.float16),
    ]
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100")
    note = startup.device_note(torch.device("cuda", 0), torch.float16, 4, 64)
    assert note == "Running on **CUDA** (NVIDIA H100) in float16; 4 generation(s) at a time, up to 64 waiting."


# ---- a stand-in pipeline: known step times, can fail ----


class SlowPipeline:
    """Streams steps like the real pipeline, one per `step_seconds`; records when each step ended and when it was closed."""

    def __init__(self, step_seconds: float = STEP_SECONDS, fail: Exception | None = None):
        self.step_seconds = step_seconds
        self.fail = fail
        self.step_ends = []
        self.stopped_at = None  # when the stream was closed before its end (Stop, a lost client)

    def stream(self, num_images=1, num_inference_steps=1, scheduler="ddim", eta=0.0, seed=0, **kwargs):
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        x = torch.zeros(num_images, 3, 4, 4)
        try:
            for step in range(num_inference_steps):
                time.sleep(self.step_seconds)
                self.step_ends.append(time.monotonic())
                yield Step(step, 999 - step, x, x)
        except GeneratorExit:
            self.stopped_at = time.monotonic()
            raise
        images = [Image.new("RGB", (4, 4))] * num_images
        settings = {"seed": seed, "steps": num_inference_steps}
        yield SampleOutput(images, seed, num_inference_steps, len(self.step_ends), 0.0, settings)


def run_unconditional(*args):
    return list(app.generate_unconditional(*args, progress=lambda *a, **k: None))


def test_out_of_memory_suggests_fewer_images_and_the_next_request_works(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    pipe = SlowPipeline(step_seconds=0.0, fail=torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    monkeypatch.setitem(app.MODELS.uncond, app.MODELS.default_uncond, pipe)
    with pytest.raises(gr.Error, match="Out of memory while generating 16 images at once: try fewer images."):
        run_unconditional(app.MODELS.default_uncond, "DDIM", 3, 0.0, 16, 0)
    assert emptied == [True]  # the failed batch's memory is handed back
    gallery, settings, seed, strip, _ = run_unconditional(app.MODELS.default_uncond, "DDIM", 3, 0.0, 4, 1)[-1]
    assert len(gallery) == 4 and seed == 1


def test_result_folders_stay_bounded_and_a_folder_in_use_is_kept():
    from webapp.streaming import ResultFolders

    folders = ResultFolders(keep=3)
    busy = folders.new()  # a long request, still writing
    for _ in range(10):
        folders.release(folders.new())
        time.sleep(0.01)  # distinct modification times
    remaining = [entry.path for entry in os.scandir(folders.root)]
    assert busy in remaining and len(remaining) <= 3 + 1
    shutil.rmtree(folders.root)


# ---- Stop and lost clients on the served app ----


@pytest.fixture(scope="module")
def served():
    """The app's Blocks served in this process (so a test can swap its pipeline and watch its worker threads)."""
    port = free_port()
    app.demo.queue(max_size=app.QUEUE_SIZE)
    app.demo.launch(
        prevent_thread_lock=True, quiet=True, **{**app.launch_options(app.parse_args([])), "server_port": port}
    )
    yield f"http://127.0.0.1:{port}/"
    app.demo.close()


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def steps_after(pipe: SlowPipeline, moment: float) -> int:
    return sum(end > moment for end in pipe.step_ends)


@pytest.mark.slow
def test_stop_frees_the_worker_within_a_step_and_the_next_request_runs(served, monkeypatch):
    from gradio_client import Client

    pipe = SlowPipeline()
    monkeypatch.setitem(app.MODELS.uncond, app.MODELS.default_uncond, pipe)
    client = Client(served, verbose=False)
    # upscale off: the fake pipeline has no pictures for the upsampler
    job = client.submit(app.MODELS.default_uncond, "DDPM", 1000, 0.0, 1, 0, 1, 0.0, False, api_name="/unconditional")
    wait_until(lambda: len(pipe.step_ends) >= 3)
    pressed = time.monotonic()
    job.cancel()  # what the page's Stop button sends
    wait_until(lambda: pipe.stopped_at is not None, timeout=5)
    # the step under way when the stop arrived, at most one more: Gradio stops iterating the handler at its next
    # yield (every step yields) and closes it, which closes the pipeline's stream
    assert steps_after(pipe, pressed) <= 2 and pipe.stopped_at - pressed < 2 * STEP_SECONDS + 0.2
    monkeypatch.setitem(app.MODELS.uncond, app.MODELS.default_uncond, SlowPipeline(step_seconds=0.01))
    assert (
        client.predict(app.MODELS.default_uncond, "DDIM", 3, 0.0, 2, 5, 1, 0.0, False, api_name="/unconditional")[2]
        == 5
    )


@pytest.mark.slow
def test_a_client_that_disconnects_mid_run_frees_the_worker(served, monkeypatch):
    pipe = SlowPipeline()
    monkeypatch.setitem(app.MODELS.uncond, app.MODELS.default_uncond, pipe)
    config = httpx.get(served + "config").json()
    fn_index = next(dep["id"] for dep in config["dependencies"] if dep.get("api_name") == "unconditional")
    session = "lost-client"
    body = {
        "data": [
            app.MODELS.default_uncond,
            "DDPM",
            1000,
            0.0,
            1,
            0,
            1,
            0.0,
            False,
            15,
            0,
        ],  # every input: no defaults here
        "fn_index": fn_index,
        "session_hash": session,
        "event_data": None,
        "trigger_id": None,
    }
    assert httpx.post(served + "gradio_api/queue/join", json=body).status_code == 200
    with httpx.stream("GET", served + f"gradio_api/queue/data?session_hash={session}", timeout=30) as stream:
        for _ in stream.iter_lines():
            if len(pipe.step_ends) >= 3:
                break
        gone = time.monotonic()
    # the connection is closed: Gradio notices at its next message (the next step's yield) and closes the generator
    wait_until(lambda: pipe.stopped_at is not None, timeout=5)
    assert steps_after(pipe, gone) <= 2 and pipe.stopped_at - gone < 2 * STEP_SECONDS + 0.2


@pytest.mark.slow
def test_uploads_are_size_limited_and_no_folder_beyond_gradios_is_served(served):
    big = httpx.post(served + "gradio_api/upload", files={"files": ("big.png", b"\0" * (6 * 2**20), "image/png")})
    assert big.status_code == 413
    small = httpx.post(served + "gradio_api/upload", files={"files": ("small.png", b"\0" * 1000, "image/png")})
    assert small.status_code == 200
    for path in (
        os.path.join(ROOT, "app.py"),
        os.path.join(WEIGHTS, "uncond", "model.safetensors"),
        "/etc/passwd",
        app.RESULTS.root,
    ):
        assert httpx.get(served + f"gradio_api/file={path}").status_code == 403, path


# ---- hostile files: the settings reader and the picture of "How it works" ----


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int, height: int, text: dict | None = None) -> bytes:
    """A tiny file that claims `width` x `height` pixels: a decompression bomb for any reader that decodes it."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))  # 1-bit grey
    chunks = b"".join(png_chunk(b"tEXt", f"{k}\0{v}".encode("latin-1")) for k, v in (text or {}).items())
    row = b"\0" + b"\0" * ((width + 7) // 8)
    pixels = zlib.compressobj(9)
    data = (
        b"".join(pixels.compress(row) for _ in range(min(height, 64))) + pixels.flush()
    )  # only the first rows: enough to fool a header check
    return b"\x89PNG\r\n\x1a\n" + header + chunks + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def hostile_files(tmp_path) -> dict:
    """name -> path of files a person might drop on the app."""
    good = tmp_path / "good.png"
    info = PngInfo()
    info.add_text("seed", "1")
    info.add_text("steps", "5")
    Image.new("RGB", (8, 8)).save(good, pnginfo=info)
    data = good.read_bytes()
    files = {
        "truncated": data[: len(data) - 20],  # the end cut off: the text chunks are intact, the file is not
        "half": data[: len(data) // 2],
        "corrupt": data[:40] + bytes([data[40] ^ 0xFF]) + data[41:],  # one flipped byte: a checksum fails
        "not an image": b"hello, not an image",
        "empty": b"",
        "bomb": huge_png(100_000, 100_000, {"seed": "1"}),
    }
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name.replace(' ', '_')}.png"
        paths[name].write_bytes(content)
    paths["jpeg"] = tmp_path / "photo.png"  # a JPEG behind a .png name
    Image.new("RGB", (8, 8)).save(paths["jpeg"], format="JPEG")
    for name, value in [("ill-typed", "five"), ("huge chunk", "9" * 2_000_000)]:
        info = PngInfo()
        info.add_text("steps", value)
        paths[name] = tmp_path / f"{name.replace(' ', '_')}.png"
        Image.new("RGB", (8, 8)).save(paths[name], pnginfo=info)
    paths["oversized file"] = tmp_path / "oversized.png"
    paths["oversized file"].write_bytes(data + b"\0" * (9 * 2**20))
    return {name: str(path) for name, path in paths.items()}


@pytest.mark.parametrize(
    "name, message",
    [
        ("truncated", "not a readable PNG file"),
        ("half", "not a readable PNG file"),
        ("corrupt", "not a readable PNG file"),
        ("not an image", "not a PNG file"),
        ("empty", "not a PNG file"),
        ("jpeg", "not a PNG file"),
        ("bomb", "not a readable PNG file \\(DecompressionBombError\\)"),
        ("ill-typed", "setting 'steps' should be a int, got 'five'"),
        ("huge chunk", "not a readable PNG file|setting 'steps' is longer than 4096 characters"),
        ("oversized file", "the file is 9.0 MB; at most 8 MB are read"),
    ],
)
def test_a_hostile_png_dropped_on_the_settings_reader_gets_a_message(tmp_path, name, message):
    with pytest.raises(gr.Error, match=f"Settings file: ({message})"):
        app.restore_settings(hostile_files(tmp_path)[name], TEXT_CONTROLS)


@pytest.mark.parametrize(
    "name, message",
    [
        ("half", "Picture could not be read"),
        ("not an image", "Picture could not be read \\(UnidentifiedImageError\\)"),
        ("bomb", "Picture could not be read \\(DecompressionBombError\\)"),
    ],
)
def test_a_hostile_picture_for_the_forward_process_gets_a_message(tmp_path, name, message):
    with pytest.raises(gr.Error, match=message):
        app.show_forward_process(hostile_files(tmp_path)[name], 10, app.MODELS.default_uncond)


def test_pictures_are_checked_before_they_are_decoded(tmp_path):
    assert Image.MAX_IMAGE_PIXELS == app.MAX_PICTURE_SIDE**2  # Pillow's decompression-bomb guard is on
    wide = tmp_path / "wide.png"
    Image.new("L", (app.MAX_PICTURE_SIDE + 1, 1)).save(wide)
    with pytest.raises(gr.Error, match="Picture must be at most 2048 pixels a side, got 2049x1"):
        app.show_forward_process(str(wide), 10, app.MODELS.default_uncond)
    bitmap = tmp_path / "picture.bmp"
    Image.new("RGB", (8, 8)).save(bitmap)
    with pytest.raises(gr.Error, match="Picture must be a PNG, JPEG, WebP or GIF image, got BMP"):
        app.show_forward_process(str(bitmap), 10, app.MODELS.default_uncond)


# ---- what is loaded and what is served ----


def test_only_safetensors_weights_are_ever_loaded():
    # no pickle-based loader anywhere in the code (the tests may mention them: they check they are refused)
    pickle_loaders = re.compile(
        r"torch\.load\(|import pickle|pickle\.loads?\(|import dill|joblib\.load|allow_pickle\s*=\s*True|use_safetensors\s*=\s*False"
    )
    sources = [os.path.join(ROOT, "app.py")]
    for package in ("uncond", "txt2img", "webapp"):
        sources += [
            os.path.join(ROOT, package, name)
            for name in os.listdir(os.path.join(ROOT, package))
            if name.endswith(".py")
        ]
    for path in sources:
        with open(path) as f:
            assert not pickle_loaders.search(f.read()), path


def test_launch_serves_loopback_no_share_link_no_extra_folders(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    options = app.launch_options(app.parse_args([]))
    assert options["server_name"] == "127.0.0.1" and options["share"] is False and options["show_error"] is False
    assert "allowed_paths" not in options and options["max_file_size"] == startup.MAX_UPLOAD
    assert app.launch_options(app.parse_args(["--share"]))["share"] is True  # only when asked for
