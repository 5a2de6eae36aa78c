"""Helpers for tests that start `python app.py` as a server on a free loopback port."""

import os
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(server: subprocess.Popen, port: int, timeout: float = 120) -> None:
    """Wait until the app subprocess listens on `port` (failing with its output if it exits)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            assert server.poll() is None, (
                server.stdout.read() if server.stdout else f"the app exited with code {server.returncode}"
            )
            time.sleep(0.5)
    raise AssertionError(f"the app did not listen on port {port} within {timeout} s")
