"""What every scenario needs: settings, the client key, helper servers, a database connection."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx2

from bench import floor, kafkautil
from bench.config import Settings


@dataclass
class Context:
    """Shared by the scenarios of one bench run."""

    settings: Settings
    key: str
    images: str  # base URL of the bench's image server
    receiver: str  # base URL of the bench's webhook receiver (the same server)
    http: httpx2.Client = field(default_factory=lambda: httpx2.Client(timeout=600))
    conn: Any = field(default_factory=floor.connect)
    log_started: float = field(default_factory=time.monotonic)

    def log(self, message: str) -> None:
        """Progress on stderr, with the time since the bench started."""
        print(f"[bench {time.monotonic() - self.log_started:6.1f}s] {message}", file=sys.stderr, flush=True)

    def wait_idle(self, timeout_s: float = 120.0) -> None:
        """Wait until the stack's consumers have no lag (earlier work must not overlap a run)."""
        deadline = time.monotonic() + timeout_s
        while (behind := kafkautil.lag()) and time.monotonic() < deadline:
            time.sleep(0.5)
        if behind:
            self.log(f"warning: consumers still {behind} messages behind; measuring anyway")
        self.wait_quiet()

    def wait_quiet(self, busy_below: float = 0.25, timeout_s: float = 60.0) -> None:
        """Wait until less than `busy_below` of the machine's CPU time was busy over a second.

        No lag is not enough: after a 50,000-lot job, PostgreSQL vacuums and checkpoints what the
        job wrote, and a floor measured at once took three times as long (its COPY 0.76 -> 2.19 s).
        """
        deadline = time.monotonic() + timeout_s
        busy = _busy_share(1.0)
        while busy >= busy_below:
            if time.monotonic() >= deadline:
                self.log(f"warning: the machine is still {busy:.0%} busy; measuring anyway")
                return
            busy = _busy_share(1.0)


def _busy_share(seconds: float) -> float:
    """The share of all CPUs' time spent on anything but idling, over `seconds` (/proc/stat)."""
    def idle_total() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
        return fields[3], sum(fields)
    idle_before, total_before = idle_total()
    time.sleep(seconds)
    idle_after, total_after = idle_total()
    return 1.0 - (idle_after - idle_before) / max(1, total_after - total_before)
