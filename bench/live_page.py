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

from bench.measure import served_app
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


def bench_live_page(log, prompts: list[str] = PROMPTS) -> dict | None:
    """Seconds from the last keystroke to the live picture's last change, per prompt and their median (None, with
    the reason logged, where node, Chromium or the npm set are missing)."""
    missing = missing_tools()
    if missing:
        log({"live_page": f"skipped: needs {missing}"})
        return None
    with served_app(ROOT) as (port, env, _):
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
