"""Live mode as a person feels it: `python app.py` served, Chromium typing prompts into it (tests/browser/live_latency.mjs).

    python -m bench.live_page            # prints one line per prompt and the median; needs node, chromium, npm ci

The pipeline row (bench/app_timings.py bench_live) times one picture; this one adds what lies between a keystroke
and the picture on the page: the page's requests, the stale ones dropped by the server, and the browser showing the
file. The browser runs on the same cores as the app, as it does for a person running `python app.py`.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

from bench.measure import _free_port
from bench.models import ROOT

BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PROMPTS = ["cat face", "a happy dog", "red heart", "pizza", "corazón rojo"]
TYPE_MS = 80  # a key every 80 ms: a quick typist


def missing_tools() -> str | None:
    """What the browser row needs and this machine lacks, or None."""
    if shutil.which("node") is None:
        return "node"
    if not os.path.isfile(CHROMIUM):
        return CHROMIUM
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        return "npm ci --prefix tests/browser"
    return None


def wait_until_served(server: subprocess.Popen, port: int, timeout: float = 180.0) -> None:
    """Block until the app answers HTTP 200, or raise if it exits or takes longer than `timeout`."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if server.poll() is not None:
            raise RuntimeError(f"app.py exited with {server.returncode} before serving")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"app.py did not serve within {timeout:.0f} s")


def bench_live_page(log, prompts: list[str] = PROMPTS) -> dict | None:
    """Seconds from the last keystroke to the live picture's last change, per prompt and their median (None, with
    the reason logged, where node, Chromium or the npm set are missing)."""
    missing = missing_tools()
    if missing:
        log({"live_page": f"skipped: needs {missing}"})
        return None
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until_served(server, port)
        run = subprocess.run(
            ["node", "live_latency.mjs"],
            cwd=BROWSER_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            env={
                **env,
                "APP_URL": f"http://127.0.0.1:{port}/",
                "CHROMIUM": CHROMIUM,
                "PROMPTS": "|".join(prompts),
                "TYPE_MS": str(TYPE_MS),
            },  # fmt: skip
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    if run.returncode != 0:
        raise RuntimeError(f"live_latency.mjs failed:\n{run.stdout}{run.stderr}")
    rounds = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    result = {
        "live_page_s": statistics.median(r["latency_s"] for r in rounds),
        "rounds": rounds,
        "type_ms": TYPE_MS,
    }
    log({"live_page": result})
    return result


if __name__ == "__main__":
    measured = bench_live_page(print)
    if measured is not None:
        print(f"live mode in Chromium: {measured['live_page_s']:.2f} s median from the last keystroke to the picture")
