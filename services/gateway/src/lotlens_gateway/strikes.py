"""Bodies from an address whose bodies keep failing before authentication are refused unread.

A job body is parsed whole before its client is known (the signature covers the canonical form
of `lots`, and each key is tried on it), and it is parsed in one of the process's few intake
slots: 8 MB of hostile JSON costs up to about 2 CPU-s there. Without this, anyone without a key
could send such bodies back to back and keep other clients' jobs answered 503 INTAKE_BUSY; or
trickle bodies that never finish, each holding one of the intake's admissions until its 408.

So a job body refused before its client was known (401, 403, or a 400/408/413 of the reader, or
its sender gone before it all arrived: 499) is a strike against its address; after `limit`
strikes within `window_s`, that address's bodies get 429 until the window ends, read and dropped
unparsed. A body of one lot's size (every synchronous lot) takes no intake slot, but its 401, 403
or 400/413 of the signed reader is a strike too: an unsigned 1 MiB body costs 0.4-0.9 CPU-s to
refuse, and an address could send them back to back. One of undeclared size (chunked) is taken
for a job's, as the slots take it.

The address is the peer as uvicorn reports it: behind a proxy it is the client's own only when
uvicorn trusts the proxy's `X-Forwarded-For` (`FORWARDED_ALLOW_IPS`, deploy/k8s/README.md);
otherwise everyone behind the proxy shares one count. Counts live in the process (the event
loop's thread), so each gateway replica allows `limit` strikes per window: no database write is
spent on requests that prove nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from lotlens_gateway.errors import ApiError
from lotlens_gateway.metrics import GatewayMetrics

# Addresses remembered at once: past this, the oldest window is forgotten.
MAX_ADDRESSES = 10_000


@dataclass
class _Window:
    start: float
    strikes: int = 0


class AddressStrikes:
    """`record(address)` counts a strike; `refusal(address)` is the 429 for a struck-out address."""

    def __init__(self, limit: int, window_s: float, metrics: GatewayMetrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window_s = window_s
        self._metrics = metrics
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def record(self, address: str) -> None:
        """One more body from `address` refused before its client was known."""
        if self._limit < 1:
            return
        now = self._clock()
        window = self._current(address, now)
        if window is None:
            self._make_room()
            window = self._windows[address] = _Window(now)
        window.strikes += 1

    def refusal(self, address: str) -> ApiError | None:
        """429 with `Retry-After` while `address` has `limit` strikes in its window, else None."""
        now = self._clock()
        window = self._current(address, now)
        if window is None or window.strikes < self._limit:
            return None
        self._metrics.struck_out.inc()
        retry_after = max(1, math.ceil(window.start + self._window_s - now))
        return ApiError(
            429, "RATE_LIMIT_EXCEEDED",
            f"{window.strikes} bodies from this address were refused before authentication in "
            f"{self._window_s:g} s; nothing was read, retry in {retry_after} s",
            details={"reason": "failed_before_authentication", "limit": self._limit,
                     "window_seconds": self._window_s, "retry_after": retry_after},
            headers={"Retry-After": str(retry_after)})

    def _current(self, address: str, now: float) -> _Window | None:
        window = self._windows.get(address)
        if window is not None and now - window.start >= self._window_s:
            del self._windows[address]
            return None
        return window

    def _make_room(self) -> None:
        # Windows are inserted as they start, so the first is the oldest (and expired first).
        if len(self._windows) >= MAX_ADDRESSES:
            del self._windows[next(iter(self._windows))]
