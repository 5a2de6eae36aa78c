"""Soak: the served app over a long run, K clients looping every endpoint; does the server's memory stay flat?

    python -m bench soak --minutes 30 --clients 3                  # what README Reliability reports
    python -m bench soak --minutes 2 --clients 1 --steps 2         # a quick look

Starts `python app.py` (the shipped models) on a free port of 127.0.0.1 with its own temporary folder, so that
Gradio's cache and the app's result folders are the soak's to measure. K clients (gradio_client, each its own
session) send the requests of bench/soak_requests.py one after another with a think time between them, until the
minutes are up. Every `--every` seconds it samples the server: resident memory, threads, open files and the size
of the temporary folder (Gradio's cache and the result folders). At the end it prints the figures and each one's
least-squares slope per minute after the warm-up (the first third, at most 5 minutes), and writes them as JSON.
Only loopback addresses; every loop stops by itself (the deadline, then at most one request per client).
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter

from bench.measure import free_port
from bench.models import ROOT
from bench.soak_requests import fetch_all, request_for

HOST = "127.0.0.1"  # loopback only: the soak never serves or calls beyond this machine
MAX_CLIENTS = 16


def check_args(minutes: float, clients: int, steps: int, images: int, think: float, every: float) -> None:
    """ValueError naming the first argument out of its range."""
    if not 0 < minutes <= 24 * 60:
        raise ValueError(f"--minutes must be in (0, 1440], got {minutes}")
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"--clients must be in [1, {MAX_CLIENTS}], got {clients}")
    if not 1 <= steps <= 50:
        raise ValueError(f"--steps must be in [1, 50], got {steps}")
    if not 1 <= images <= 4:
        raise ValueError(f"--images must be in [1, 4], got {images}")
    if not 0 <= think <= 600:
        raise ValueError(f"--think must be in [0, 600] seconds, got {think}")
    if not 0.1 <= every <= 600:
        raise ValueError(f"--every must be in [0.1, 600] seconds, got {every}")


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points."""
    if len(points) < 2:
        raise ValueError(f"points: a slope needs at least 2, got {len(points)}")
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        raise ValueError("points: all at the same x, no slope")
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, in value per minute."""
    return 60 * slope(points)


def folder_mb(path: str) -> float:
    """Bytes of the files under `path`, in MB (files that go while it is walked are skipped)."""
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total / 2**20


def process_sample(pid: int, folder: str | None = None) -> dict:
    """A process's resident memory (MB), threads and open files from /proc; and `folder`'s size in MB."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    sample = {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
        "open_files": len(os.listdir(f"/proc/{pid}/fd")),
    }
    if folder is not None:
        sample["folder_mb"] = folder_mb(folder)
    return sample


def start_server(folder: str, port: int, log) -> subprocess.Popen:
    """`python app.py` on HOST:port, its temporary files (Gradio's cache, the result folders) under `folder`."""
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": HOST,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_TEMP_DIR": os.path.join(folder, "gradio"),
        "TMPDIR": folder,
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    return subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_page(server: subprocess.Popen, port: int, timeout: float) -> None:
    """Wait until the app answers on HOST:port; RuntimeError if it exits first or takes longer than `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"app.py exited with {server.returncode} before serving")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"app.py did not serve within {timeout:.0f} s")


def run_client(url: str, client: int, deadline: float, args, answers: list, lock: threading.Lock) -> None:
    """One session's loop until `deadline`: a request, its files fetched every other time, a think time."""
    from gradio_client import Client

    connection = Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 120})
    i = 0
    while time.monotonic() < deadline:
        endpoint, request = request_for(client, i, args.steps, args.images)
        started, error = time.monotonic(), None
        try:
            output = connection.predict(*request, api_name=endpoint)
            if i % 2 == 0:  # kept: shown in a browser; otherwise dropped, never fetched
                fetch_all(output)
        except Exception as caught:  # counted and reported, never raised: the soak goes on
            error = f"{type(caught).__name__}: {caught}"[:300]
        with lock:
            answers.append({"endpoint": endpoint, "seconds": time.monotonic() - started, "error": error})
        i += 1
        time.sleep(args.think)


def summary(samples: list[dict], warm_up: float) -> dict:
    """Each sampled figure's first and last value after the warm-up, its range and slope per minute."""
    after = [s for s in samples if s["t"] >= warm_up] or samples[-2:]
    figures = {}
    for key in ("rss_mb", "threads", "open_files", "folder_mb"):
        values = [s[key] for s in after]
        figures[key] = {
            "start": values[0],
            "end": values[-1],
            "min": min(values),
            "max": max(values),
            "slope_per_minute": slope_per_minute([(s["t"], s[key]) for s in after]) if len(after) > 1 else 0.0,
            # per 100 requests: comparable between runs that got different shares of the CPU
            "slope_per_100_requests": 100 * slope([(s["answers"], s[key]) for s in after])
            if len({s["answers"] for s in after}) > 1
            else 0.0,
        }
    figures["rss_mb"]["before_warm_up"] = samples[0]["rss_mb"]
    return figures


def soak(args) -> dict:
    """Serve, drive and sample for args.minutes; the samples, answers and summary."""
    folder = tempfile.mkdtemp(prefix="soak-server-")
    port = free_port()
    samples, answers, lock = [], [], threading.Lock()
    # the server's output to a file: a full pipe would stall it
    with open(os.path.join(folder, "server.log"), "w") as log:
        server = start_server(folder, port, log)
        drive(server, port, folder, args, samples, answers, lock)
    warm_up = min(5 * 60, 60 * args.minutes / 3)
    return {"samples": samples, "answers": answers, "summary": summary(samples, warm_up), "warm_up_s": warm_up}


def drive(server, port: int, folder: str, args, samples: list, answers: list, lock) -> None:
    """The clients' loops until the deadline while the server is sampled; the server stopped at the end."""
    try:
        wait_for_page(server, port, timeout=300)
        started = time.monotonic()
        deadline = started + 60 * args.minutes
        url = f"http://{HOST}:{port}/"
        clients = [
            threading.Thread(target=run_client, args=(url, c, deadline, args, answers, lock), daemon=True)
            for c in range(args.clients)
        ]
        for thread in clients:
            thread.start()
        while time.monotonic() < deadline:
            sample = {"t": time.monotonic() - started, **process_sample(server.pid, folder), "answers": len(answers)}
            samples.append(sample)
            print(json.dumps({k: round(v, 1) for k, v in sample.items()}), flush=True)
            time.sleep(min(args.every, max(0.0, deadline - time.monotonic())))
        for thread in clients:
            thread.join(timeout=300)  # each finishes the request it is in
        samples.append({"t": time.monotonic() - started, **process_sample(server.pid, folder), "answers": len(answers)})
        assert server.poll() is None, "the server exited during the soak"
    finally:
        server.terminate()
        server.wait(timeout=30)


def report(result: dict, args) -> str:
    """The figures as lines of text."""
    answers, figures = result["answers"], result["summary"]
    errors = [a for a in answers if a["error"]]
    per_endpoint = Counter(a["endpoint"] for a in answers)
    lines = [
        f"SOAK: {args.minutes} min, {args.clients} clients, {args.steps} steps, {args.images} images, think {args.think} s",
        f"SOAK: {len(answers)} requests, {len(errors)} errors; "
        + ", ".join(f"{k} {v}" for k, v in per_endpoint.items()),
        f"SOAK: after the {result['warm_up_s'] / 60:.1f}-minute warm-up (RSS {figures['rss_mb']['before_warm_up']:.0f} MB at the start):",
    ]
    for key, unit in (("rss_mb", "MB"), ("threads", ""), ("open_files", ""), ("folder_mb", "MB")):
        f = figures[key]
        lines.append(
            f"SOAK:   {key}: {f['start']:.1f} -> {f['end']:.1f} {unit} (range {f['min']:.1f}-{f['max']:.1f}), "
            f"slope {f['slope_per_minute']:+.2f} {unit}/min, {f['slope_per_100_requests']:+.2f} {unit}/100 requests"
        )
    lines += [f"SOAK: error: {e['endpoint']}: {e['error']}" for e in errors[:5]]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="how long the clients send requests")
    parser.add_argument("--clients", type=int, default=3, help="sessions sending requests at once")
    parser.add_argument("--steps", type=int, default=4, help="sampling steps per request (few: leaves CPU to others)")
    parser.add_argument("--images", type=int, default=2, help="images per request")
    parser.add_argument("--think", type=float, default=1.0, help="seconds a client waits between requests")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between samples of the server")
    parser.add_argument("--out", default=None, help="JSON file for the samples and figures")
    args = parser.parse_args(argv)
    check_args(args.minutes, args.clients, args.steps, args.images, args.think, args.every)
    result = soak(args)
    print(report(result, args), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"settings": vars(args), **result}, f, indent=1)
    return result
