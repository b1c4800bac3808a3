"""Marks of attempts whose POST is starting, written together.

Right before its POST each attempt marks its row (`dispatch_queue.mark_posting`): a claim whose
lease runs out unmarked was never sent, so the next claim makes the same attempt instead of
recording an interruption, and only the claim's holder can mark it, so one stalled past its lease
never sends an attempt another instance took over. A transaction per attempt cost about a third
of the deliveries a second (1,500 to an in-process receiver on 2 cores: some 240 a second, 170
with a transaction each, 200 to 220 grouped, within the noise of no mark). Whoever comes while a
mark is being written waits for the next write, which takes every mark waiting: one statement
and one commit for all of them (group commit). The same statement checks each attempt's client's
secrets against the version the attempt read before (`webhook_secrets.CHANGED_SQL`) and returns
them when they changed: a rotation reaches the POST at no cost, and signing reads nothing after
the mark, where a failed read could no longer hand the claim back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from lotlens_common.webhook_secrets import Signing
from lotlens_webhook_dispatcher import dispatch_queue
from lotlens_webhook_dispatcher.dispatch_queue import Delivery


@dataclass(frozen=True)
class Held:
    """A marked attempt, still this instance's to send, and its client's secrets as the mark read
    them when they were not at the version the attempt knew (None: they were)."""

    changed: Signing | None


@dataclass(eq=False)
class _Mark:
    delivery: Delivery
    version_known: datetime | None
    done: bool = False
    held: Held | None = None
    error: Exception | None = None


class PostMarks:
    """`mark(delivery)`: whether the attempt may be sent, its POST marked as starting."""

    def __init__(self, engine: Engine, lease_s: float, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._lease_s = lease_s
        self._clock = clock
        self._waiting: list[_Mark] = []
        self._lock = threading.Lock()  # guards `_waiting`
        self._writer = threading.Lock()  # one write at a time

    def mark(self, delivery: Delivery, version_known: datetime | None = None) -> Held | None:
        """Mark the attempt's POST as starting and renew its lease; None when the claim is no
        longer this instance's to send. `version_known`: the version of the client's secrets the
        attempt read (None: none). Raises what PostgreSQL raised (nothing is sent then)."""
        mark = _Mark(delivery, version_known)
        with self._lock:
            self._waiting.append(mark)
        with self._writer:
            if not mark.done:  # not taken by the write that held the lock before
                with self._lock:
                    batch, self._waiting = self._waiting, []
                self._write(batch)
        if mark.error is not None:
            raise mark.error
        return mark.held

    def _write(self, batch: list[_Mark]) -> None:
        try:
            with self._engine.begin() as conn:
                held = dispatch_queue.mark_posting(
                    conn, [m.delivery for m in batch], self._clock(), self._lease_s,
                    {m.delivery.delivery_id: m.version_known for m in batch})
        except Exception as exc:  # every attempt of the batch breaks before its POST
            for mark in batch:
                mark.error, mark.done = exc, True
            return
        for mark in batch:
            found = mark.delivery.delivery_id in held
            mark.held, mark.done = Held(held[mark.delivery.delivery_id]) if found else None, True
