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
