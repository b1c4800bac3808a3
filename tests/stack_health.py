"""The one wait for a freshly started stack (e2e harness, chaos runner): the gateway's /health."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Mapping

import httpx2


def wait_healthy(gateway_url: str, processes: Mapping[str, subprocess.Popen[bytes]],
                 log_tail: Callable[[str], str], seconds: float = 180) -> None:
    """Wait until the gateway answers /health with 200; raise, with the log's end, when a process
    exits meanwhile or the time is up (minutes on a loaded machine: many Python processes start
    at once)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: {log_tail(name)}")
        with contextlib.suppress(httpx2.HTTPError):  # not serving yet
            if httpx2.get(f"{gateway_url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"gateway not healthy after {seconds:.0f} s: {log_tail('gateway')}")
