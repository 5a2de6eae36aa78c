"""A real browser on the served app: Playwright (playwright-core from npm) drives Debian's Chromium."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.serving import ROOT, free_port, wait_for_port

BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.mark.slow
def test_a_person_generates_and_reads_back_settings_in_chromium(tmp_path):
    if (
        shutil.which("node") is None
        or not os.path.isfile(CHROMIUM)
        or not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core"))
    ):
        pytest.skip("needs node, Debian's chromium and `npm ci` in tests/browser (.ci/run installs all three)")
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for_port(server, port)
        screenshot = os.environ.get("BROWSER_SCREENSHOT", str(tmp_path / "app.png"))
        run = subprocess.run(
            ["node", "app_test.mjs"],
            cwd=BROWSER_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "APP_URL": f"http://127.0.0.1:{port}/", "SCREENSHOT": screenshot, "CHROMIUM": CHROMIUM},
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "PNG settings" in run.stdout and os.path.getsize(screenshot) > 10_000
        assert "image to image PNG" in run.stdout and "inpainting PNG" in run.stdout
        history = subprocess.run(
            ["node", "history_test.mjs"],
            cwd=BROWSER_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "APP_URL": f"http://127.0.0.1:{port}/", "CHROMIUM": CHROMIUM},
        )
        assert history.returncode == 0, history.stdout + history.stderr
        assert "history restored" in history.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
