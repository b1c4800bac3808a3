"""A blocking check of a dependency (the Kafka probe, the database ping) shared by concurrent callers.

Health checks come in storms (kubelets, load balancers, dashboards) and block on the dependency
they check. Run in Starlette's thread pool, each waiting `/health` held one of the 40 threads every
route needs while it queued for the Kafka probe, and a status poll waited seconds behind them for
a thread; a ping timed out with `asyncio.wait_for` left its thread blocked on the database but gave
the thread's token back, so during a hang every probe added a blocked thread (and a read-pool
connection). Here a call runs on threads of its own, every caller that comes while it runs waits
for that same call on the event loop (holding no thread), and a caller that gives up leaves the
call running for the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")


class SharedCheck(Generic[T]):
    """One call of `check` in flight for all callers, on at most `threads` threads of its own.

    With `timeout_s`, a caller waits that long at most (then `TimeoutError`), and a call running
    longer is left to end on its own while the next caller starts another, if a thread is free.
    """

    def __init__(self, check: Callable[[], T], threads: int = 1, timeout_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._check = check
        self._threads = anyio.CapacityLimiter(threads)
        self._timeout_s = timeout_s
        self._clock = clock
        self._call: asyncio.Task[T] | None = None
        self._started = 0.0

    async def result(self) -> T:
        """The running call's result (a new call's when none runs)."""
        call = self._call
        if call is None or call.done() or self._may_start_another():
            call = self._call = asyncio.ensure_future(
                anyio.to_thread.run_sync(self._check, limiter=self._threads))
            call.add_done_callback(_retrieve)
            self._started = self._clock()
        # Shielded: a caller's timeout or disconnect must not cancel the call, which would leave
        # its thread blocked and hand its token to yet another thread.
        return await asyncio.wait_for(asyncio.shield(call), self._timeout_s)

    def _may_start_another(self) -> bool:
        # A connection on a dead socket can block for many minutes: the check must not go on
        # failing after the dependency is back because its one call is still stuck.
        return (self._timeout_s is not None and self._clock() - self._started >= self._timeout_s
                and self._threads.borrowed_tokens < self._threads.total_tokens)


def _retrieve(call: asyncio.Task[T]) -> None:
    # Its callers may all have given up: read the error so asyncio does not log it as unretrieved.
    if not call.cancelled():
        call.exception()
