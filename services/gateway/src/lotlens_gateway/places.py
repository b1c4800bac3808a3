"""Requests of one kind a process serves at once, per client and in all (one event loop).

Past the client's places the answer is its own doing (429), past the process's the gateway's
load (503); both with `Retry-After`, at once: a request left to queue for a place held its
connection, and the client's timeout came first. Results downloads (downloads.py) and
synchronous lots (sync_slots.py) each have theirs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from lotlens_gateway.errors import ApiError

# A place frees up when a request of its kind ends, most within seconds.
RETRY_AFTER_S = 5


@dataclass(frozen=True)
class Refusals:
    """What a kind of places says when it refuses: the 429's `details.reason` (also the details
    key of the client's limit) and message (`{limit}`), the 503's code, message (`{count}`) and
    details key of the requests in progress."""

    reason: str
    too_many: str
    busy_code: str
    busy: str
    in_progress: str


class Places:
    """Places of the process and of each client; the refusals say what the places are for."""

    def __init__(self, per_process: int, per_client: int, in_use: Gauge, refused: Counter,
                 refusals: Refusals) -> None:
        self._per_process = per_process
        self._per_client = per_client
        self._in_use = in_use  # the places held now
        self._refused = refused  # by reason: `client` (429) or `process` (503)
        self._refusals = refusals
        self._by_client: dict[str, int] = {}
        self._in_flight = 0

    @asynccontextmanager
    async def hold(self, client_id: str) -> AsyncIterator[None]:
        """Hold a place of the client's and of the process's inside; 429 or 503 when none is free."""
        if self._by_client.get(client_id, 0) >= self._per_client:
            self._refused.labels(reason="client").inc()
            raise self._too_many()
        if self._in_flight >= self._per_process:
            self._refused.labels(reason="process").inc()
            raise self._busy()
        self._by_client[client_id] = self._by_client.get(client_id, 0) + 1
        self._in_flight += 1
        self._in_use.inc()
        try:
            yield
        finally:
            self._in_flight -= 1
            self._in_use.dec()
            left = self._by_client.pop(client_id) - 1
            if left:
                self._by_client[client_id] = left

    def _too_many(self) -> ApiError:
        """429: the client holds all of its places."""
        said = self._refusals
        return ApiError(
            429, "RATE_LIMIT_EXCEEDED", said.too_many.format(limit=self._per_client, retry=RETRY_AFTER_S),
            details={"reason": said.reason, said.reason: self._per_client, "retry_after": RETRY_AFTER_S},
            headers={"Retry-After": str(RETRY_AFTER_S)})

    def _busy(self) -> ApiError:
        """503: the process's places are all held."""
        said = self._refusals
        return ApiError(
            503, said.busy_code, said.busy.format(count=self._in_flight, retry=RETRY_AFTER_S),
            details={said.in_progress: self._in_flight, "retry_after": RETRY_AFTER_S},
            headers={"Retry-After": str(RETRY_AFTER_S)})
