"""The one wait for a freshly started stack (e2e harness, chaos runner): the gateway's /health."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Mapping

import httpx2

from tests.polling import wait_for

# A poll costs the waiting test next to nothing (one loopback connect on a kept client), and the
# gateway answers within this much of being ready: at 0.3 s a stack start waited 0.15 s on average
# for nothing.
POLL_S = 0.1


def wait_healthy(gateway_url: str, processes: Mapping[str, subprocess.Popen[bytes]],
                 log_tail: Callable[[str], str], seconds: float = 180) -> None:
    """Wait until the gateway answers /health with 200; raise, with the log's end, when a process
    exits meanwhile or the time is up (minutes on a loaded machine: many Python processes start
    at once)."""
    # One client for the whole wait: `httpx2.get` builds a client per call, and each loaded the CA
    # bundle (~50 ms CPU), taken from the processes starting on the same cores. Loopback: no proxy.
    with httpx2.Client(timeout=2, trust_env=False) as http:
        def healthy() -> bool:
            for name, process in processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited: {log_tail(name)}")
            with contextlib.suppress(httpx2.HTTPError):  # not serving yet
                return http.get(f"{gateway_url}/health").status_code == 200
            return False

        wait_for(healthy, lambda: f"the gateway to be healthy: {log_tail('gateway')}", timeout_s=seconds,
                 every_s=POLL_S)
