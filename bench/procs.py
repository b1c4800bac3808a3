"""Helper processes the bench starts (its HTTP server, the bare app, the load generator)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.config import ROOT
from tests.servers import free_port


@contextmanager
def python_server(module: str, *args: str) -> Iterator[str]:
    """Run `python -m module PORT args...` until it prints a line; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", module, str(port), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        if not process.stdout.readline():
            raise RuntimeError(f"{module} did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def load(
    urls: list[str], headers: dict[str, str], connections: int, requests: int, seconds: float
) -> list[dict[str, Any]]:
    """Run `python -m bench.load` as a separate process: each URL loaded in turn; their results."""
    command = [
        sys.executable,
        "-m",
        "bench.load",
        *urls,
        "--connections",
        str(connections),
        "--requests",
        str(requests),
        "--seconds",
        str(seconds),
    ]
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=len(urls) * seconds + 120, check=True
    )
    result: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
