"""Per-client rate limits: fixed windows counted in PostgreSQL, shared by every gateway instance.

An upsert increments the `(client, mode, window)` counter and returns it; the first write of a
window also drops the client's older windows of that mode, so the table stays small. Each
instance writes its requests in batches rather than one upsert each: every request of a client
updates the same row, so under load the upserts queued on its lock (a status poll spent a fifth
of its time there). A request is counted in memory at once and the local count is written at
least every `FLUSH_S` or every `FLUSH_EVERY` requests, and always once the known total nears the
limit, so one instance decides exactly and several overshoot by at most what the others counted
since their last write. A crash forgets at most that many requests: a limit is no ledger.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, text
from sqlalchemy.dialects.postgresql import insert

from lotlens_common.tables import rate_limit_windows as windows
from lotlens_gateway.errors import ApiError
from lotlens_gateway.metrics import GatewayMetrics


def window_start(now: datetime, window_s: int) -> datetime:
    """The start of the fixed window `now` falls in (windows are aligned on the epoch)."""
    seconds = math.floor(now.timestamp() / window_s) * window_s
    return datetime.fromtimestamp(seconds, UTC)


FLUSH_S = 0.2
FLUSH_EVERY = 50


@dataclass
class _Window:
    """One client's requests of one mode in the current window, as this instance knows them."""

    start: datetime
    written: int = 0  # the shared total after this instance's last write
    unwritten: int = 0  # counted here, not yet added to the shared total
    written_at: float = 0.0


@dataclass(frozen=True)
class DueWrite:
    """A counted request whose window must be written before it is allowed or refused."""

    client_id: str
    mode: str
    window: _Window
    limit: int
    now: datetime


class RateLimiter:
    """`hit(client, mode)` counts a request and raises 429 past the mode's limit.

    `count` + `settle` are the same split in two, so an event loop runs only the write in a thread.
    """

    def __init__(self, engine: Engine, limit_of: Callable[[str], int], window_s: int,
                 metrics: GatewayMetrics) -> None:
        self._engine = engine
        self._limit_of = limit_of
        self._window_s = window_s
        self._metrics = metrics
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()

    def hit(self, client_id: str, mode: str, now: datetime) -> None:
        """Count one request of `mode` for the client (blocking); ApiError 429 when over the limit."""
        due = self.count(client_id, mode, now)
        if due is not None:
            self.settle(due)

    def count(self, client_id: str, mode: str, now: datetime) -> DueWrite | None:
        """Count one request in memory (never blocks); the write to settle when one is due, else None.

        Returning None means the request is allowed: a count at or past the limit is always due,
        so only `settle` ever refuses.
        """
        start = window_start(now, self._window_s)
        limit = self._limit_of(mode)
        with self._lock:
            window = self._windows.get((client_id, mode))
            if window is None or window.start != start:
                window = self._windows[(client_id, mode)] = _Window(start)
            window.unwritten += 1
            count = window.written + window.unwritten
            due = (window.unwritten >= FLUSH_EVERY or time.monotonic() - window.written_at >= FLUSH_S
                   or count >= limit)
        return DueWrite(client_id, mode, window, limit, now) if due else None

    def settle(self, due: DueWrite) -> None:
        """Write a due count to the shared row (blocking); ApiError 429 when over the limit."""
        count = self._write(due.client_id, due.mode, due.window)
        if count > due.limit:
            self._refuse(due.mode, due.limit, due.window.start, due.now)

    def _write(self, client_id: str, mode: str, window: _Window) -> int:
        """Add the window's unwritten requests to the shared row; the total now known."""
        with self._lock:
            adding, window.unwritten = window.unwritten, 0
        if adding:
            upsert = (insert(windows)
                      .values(client_id=client_id, mode=mode, window_start=window.start, count=adding)
                      .on_conflict_do_update(index_elements=["client_id", "mode", "window_start"],
                                             set_={"count": windows.c.count + adding})
                      .returning(windows.c.count))
            with self._engine.begin() as conn:
                # No wait for the WAL flush: the row lock is held for less time.
                conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
                total = int(conn.execute(upsert).scalar_one())
                if total == adding:
                    conn.execute(delete(windows).where(
                        windows.c.client_id == client_id, windows.c.mode == mode,
                        windows.c.window_start < window.start))
            self._metrics.db("update")
        with self._lock:
            if adding:
                window.written = max(window.written, total)
            window.written_at = time.monotonic()
            return window.written + window.unwritten

    def _refuse(self, mode: str, limit: int, start: datetime, now: datetime) -> None:
        end = start + timedelta(seconds=self._window_s)
        retry_after = max(1, math.ceil((end - now).total_seconds()))
        raise ApiError(
            429, "RATE_LIMIT_EXCEEDED",
            f"Rate limit of {limit} {mode} requests per {self._window_s} s exceeded; "
            f"retry in {retry_after} s",
            details={"mode": mode, "limit": limit, "window_seconds": self._window_s,
                     "retry_after": retry_after},
            headers={"Retry-After": str(retry_after), "X-RateLimit-Limit": str(limit),
                     "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(end.timestamp()))})
