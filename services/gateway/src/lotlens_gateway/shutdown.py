"""Requests still running when the shutdown's drain ends (a rolling restart).

After SIGTERM the process stops taking work: uvicorn closes its listener and idle connections,
and `/readyz` says not ready (`InFlight.draining`). Requests in flight get `shutdown_drain_s`;
then each is cut (`InFlight`), except a synchronous lot being described: it runs on to its own
deadline (`sync_timeout_s` from its arrival), which uvicorn's `timeout_graceful_shutdown` holds.
Cut at the drain's 30 s, a lot already in its model calls was paid for, its Idempotency-Key
released, and the client's retry described it, and paid, again: on every rolling restart.

A cut request went up as an unexpected error: a traceback in the log and a plain-text 500 to a
client that had done nothing wrong. `ShutdownCut` answers it 503 `SHUTTING_DOWN` with
`Retry-After` instead, in the contract's format, and logs a warning.

A durable write (`to_the_end`) is not cut: the cancellation only interrupted the request's wait
for its thread, the write went on, and a job could commit while its client was told 500 (the
Idempotency-Key's reservation released meanwhile: the retry made a second job). The write is
awaited to its end and its answer given: a 201 means written, any other answer nothing written.
A synchronous answer being stored under its Idempotency-Key is such a write, and given (200).
A request cut before its write began undoes what it had begun instead (`finish`): an
Idempotency-Key reservation is released (idempotency.py, `reserve_key`), and the cut is answered.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lotlens_gateway.config import GatewaySettings
from lotlens_gateway.errors import ApiError

log = logging.getLogger(__name__)
T = TypeVar("T")
# After SIGTERM: requests in flight get `shutdown_drain_s` (30 s; one still unanswered then is
# answered 503 SHUTTING_DOWN, below), synchronous lots being described up to their deadline
# (`GatewaySettings.longest_drain_s`, 300 s), then the relay publishes what they committed for at
# most `shutdown_relay_s` (10 s) and the producer flushes (FLUSH_S). The pod's
# terminationGracePeriodSeconds must hold all three after its preStop pause, or the kubelet's
# SIGKILL cuts them (nothing is lost: the outbox keeps unpublished events, but clients see resets).
# A process with no lot in its model calls ends as soon as its other requests are answered.
FLUSH_S = 10
SHUTDOWN_S = (GatewaySettings.model_construct().longest_drain_s()
              + GatewaySettings.model_fields["shutdown_relay_s"].default + FLUSH_S)
# Another replica (or this one, restarted) takes the retry at once.
RETRY_AFTER_S = 1


def shutting_down() -> ApiError:
    """503 for a request the gateway stopped before answering (nothing of it was written)."""
    return ApiError(503, "SHUTTING_DOWN", "The gateway stopped (a restart) before answering; nothing was "
                    "written, please retry",
                    headers={"Retry-After": str(RETRY_AFTER_S), "Connection": "close"})


async def finish(work: Callable[..., T], *args: Any) -> tuple[asyncio.Future[T], int]:
    """`work(*args)` in a thread, awaited to its end even when the request is cancelled meanwhile:
    its finished future and how many cuts came meanwhile (still pending on the task: the caller
    answers or re-raises them).

    Not on Starlette's pool: its task would be cancelled with the others once the server has
    stopped. The loop's default executor is joined by `asyncio.run` before the process ends."""
    context = contextvars.copy_context()  # the request's log context (job id) in the thread too
    done = asyncio.get_running_loop().run_in_executor(None, context.run, work, *args)
    cuts = 0
    while not done.done():
        try:
            await asyncio.wait({done})
        except asyncio.CancelledError:
            cuts += 1
    return done, cuts


async def to_the_end(work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` (a durable write) finished and answered, however the request is cut meanwhile."""
    done, cuts = await finish(work, *args)
    task = asyncio.current_task()
    for _ in range(cuts if task is not None else 0):
        task.uncancel()  # type: ignore[union-attr]
    if cuts:
        log.warning("a write begun before the shutdown's cut was finished and is answered")
    return done.result()


class CutNotice(logging.Filter):
    """uvicorn's ERROR that the drain ran out ("Cancel N running task(s), ..."), as a warning: the
    cut is the shutdown working as configured, and each request cut logs a warning of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Lower that one record; pass every record."""
        if record.levelno == logging.ERROR and "timeout graceful shutdown exceeded" in record.getMessage():
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class InFlight:
    """The requests being answered, for the shutdown: once its drain is over each is cut, but a
    synchronous lot being described (`runs_to_its_deadline`). Used on the event loop."""

    def __init__(self) -> None:
        self._lots: dict[asyncio.Task[Any], bool] = {}  # request → a lot being described
        self.draining = False

    def track(self, task: asyncio.Task[Any]) -> None:
        """Count a request in (its task), until `done`."""
        self._lots[task] = False

    def done(self, task: asyncio.Task[Any]) -> None:
        """The request is answered (or cut)."""
        self._lots.pop(task, None)

    def runs_to_its_deadline(self) -> None:
        """Let the current request run past the drain: a synchronous lot about to be described,
        bounded by its own budget. Cut, its model calls were paid for and its retry paid again."""
        task = asyncio.current_task()
        if task is not None and task in self._lots:
            self._lots[task] = True

    def drain(self, drain_s: float) -> None:
        """At the shutdown's start: not ready from now on, and in `drain_s` the cut."""
        self.draining = True
        asyncio.get_running_loop().call_later(drain_s, self._cut, drain_s)

    def _cut(self, drain_s: float) -> None:
        cut = [task for task, lot in self._lots.items() if not lot]
        if self._lots:
            log.warning("the shutdown's drain of %g s is over: %d request(s) cut, %d synchronous lot(s) "
                        "run on to their deadline", drain_s, len(cut), len(self._lots) - len(cut))
        for task in cut:
            task.cancel()


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose shutdown (SIGTERM: uvicorn's own handler while it serves) starts
    the drain of the requests in flight first."""

    def __init__(self, config: uvicorn.Config, in_flight: InFlight, drain_s: float) -> None:
        super().__init__(config)
        self._in_flight, self._drain_s = in_flight, drain_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Start the drain, then uvicorn's shutdown (which waits up to `timeout_graceful_shutdown`)."""
        self._in_flight.drain(self._drain_s)
        await super().shutdown(sockets)


class ShutdownCut:
    """Answers a request cancelled by the shutdown 503 `SHUTTING_DOWN` (or, its answer begun, ends it)."""

    def __init__(self, app: ASGIApp, in_flight: InFlight) -> None:
        self._app = app
        self._in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through; a cancellation of its task is answered, not raised."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = [False]

        async def noting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                started[0] = True
            await send(message)

        task = asyncio.current_task()
        if task is not None:
            self._in_flight.track(task)
        try:
            await self._app(scope, receive, noting_send)
        except asyncio.CancelledError:
            if task is None or not task.cancelling():
                raise  # not the task's own cancellation: no cut by the shutdown
            task.uncancel()
            where = f"{scope['method']} {scope['path']}"
            if started[0]:
                # Its head is sent: nothing more can be said. uvicorn closes the connection.
                log.warning("the shutdown cut the answer to %s while it was being sent", where)
                return
            log.warning("the shutdown cut %s before its answer: 503 SHUTTING_DOWN", where)
            await shutting_down().response()(scope, receive, send)
        finally:
            if task is not None:
                self._in_flight.done(task)
