"""Per-client rate limits: fixed windows counted in PostgreSQL, shared by every gateway instance.

One upsert per request increments the `(client, mode, window)` counter and returns it; the first
request of a window also drops the client's older windows of that mode, so the table stays small.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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


class RateLimiter:
    """`hit(client, mode)` counts a request and raises 429 past the mode's limit."""

    def __init__(self, engine: Engine, limit_of: Callable[[str], int], window_s: int,
                 metrics: GatewayMetrics) -> None:
        self._engine = engine
        self._limit_of = limit_of
        self._window_s = window_s
        self._metrics = metrics

    def hit(self, client_id: str, mode: str, now: datetime) -> None:
        """Count one request of `mode` for the client (blocking); ApiError 429 when over the limit."""
        start = window_start(now, self._window_s)
        upsert = (insert(windows)
                  .values(client_id=client_id, mode=mode, window_start=start, count=1)
                  .on_conflict_do_update(index_elements=["client_id", "mode", "window_start"],
                                         set_={"count": windows.c.count + 1})
                  .returning(windows.c.count))
        with self._engine.begin() as conn:
            # Every request of a client updates one row: without waiting for the WAL flush the
            # row lock is held for less time. A crash can lose a few counts; a limit is no ledger.
            conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
            count = int(conn.execute(upsert).scalar_one())
            if count == 1:
                conn.execute(delete(windows).where(windows.c.client_id == client_id, windows.c.mode == mode,
                                                   windows.c.window_start < start))
        self._metrics.db("update")
        limit = self._limit_of(mode)
        if count <= limit:
            return
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
