"""A blocking check of a dependency (the Kafka probe) shared by concurrent callers.

Health checks come in storms (kubelets, load balancers, dashboards) and block on the dependency
they check. Run in Starlette's thread pool, each waiting `/health` held one of the 40 threads every
route needs while it queued for the Kafka probe, and a status poll waited seconds behind them for
a thread. Here a call runs on threads of its own, and every caller that comes while it runs waits
for that same call on the event loop, holding no thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")


class SharedCheck(Generic[T]):
    """One call of `check` in flight for all callers, on at most `threads` threads of its own."""

    def __init__(self, check: Callable[[], T], threads: int = 1) -> None:
        self._check = check
        self._threads = anyio.CapacityLimiter(threads)
        self._call: asyncio.Task[T] | None = None

    async def result(self, timeout_s: float | None = None) -> T:
        """The running call's result (a new call's when none runs); `TimeoutError` after `timeout_s`,
        the call going on."""
        call = self._call
        if call is None or call.done():
            call = self._call = asyncio.ensure_future(
                anyio.to_thread.run_sync(self._check, limiter=self._threads))
            call.add_done_callback(_retrieve)
        # Shielded: a caller's timeout or disconnect must not cancel the call, which would leave
        # its thread blocked and hand its token to yet another thread.
        return await asyncio.wait_for(asyncio.shield(call), timeout_s)


def _retrieve(call: asyncio.Task[T]) -> None:
    # Its callers may all have given up: read the error so asyncio does not log it as unretrieved.
    if not call.cancelled():
        call.exception()
