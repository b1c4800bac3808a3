"""Per-client rate limits over a sliding window, counted in PostgreSQL, shared by every gateway instance.

A request is accepted only while fewer than the limit were accepted in the window (a minute by
default) before it. The counts are kept per slot, a sixtieth of the window (`slots.py`: a second
of a minute), one row `(client, mode, window_start, count)` each, and a decision sums the slots
that start after `now - window` (the one holding that moment is dropped whole). So a client
keeping to the limit in every window (one every 6 s at 10 a minute) is never refused, a
`Retry-After` is at most the window, and any span of the window's length accepts at most the
limit plus what its first slot (the one holding the span's start) accepted within it: the
decision on the span's last accepted request summed every earlier one in it but those. (Summing
the oldest slot whole instead held every span to the limit, but refused a client pacing at
exactly the limit and could ask a `Retry-After` of the window plus a slot, 61 s.) A burst of the
limit within one second still shuts the window until that second is a minute old. Fixed
windows, before, let a client send the limit at the end of one window and again at the start of
the next, twice the limit within 2 s; the "sliding window counter" (the previous window weighed
by its share still in the span) still lets twice the limit into one span (the limit in a
window's last second, then the next window paced).

A refused request is not counted (its count is taken back): a client retrying on 429 would
otherwise keep its window full, and `Retry-After` (when one more request will be accepted, whole
seconds, at least 1, at most the window) would never come true.

Each instance writes its requests in batches rather than one upsert each: every request of a client
updates the same row, so under load the upserts queued on its lock (a status poll spent a fifth
of its time there). A request is counted in memory at once and the local counts are written at
least every `FLUSH_S` or every `FLUSH_EVERY` requests, and always once the known total nears the
limit, so one instance decides exactly and several overshoot by at most what the others counted
since their last write. A write adds its counts and sums the window in one statement; the first
write of a slot also drops the client's slots of that mode that left the window, so the table
keeps about `SLOTS` rows per client and mode. A crash forgets at most the unwritten counts:
a limit is no ledger.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from lotlens_common.tables import rate_limit_windows as windows
from lotlens_gateway.errors import ApiError
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.slots import Slots

FLUSH_S = 0.2
FLUSH_EVERY = 50


@dataclass
class _Tally:
    """One client's requests of one mode, as this instance knows them."""

    written: int = 0  # the window's shared total after this instance's last write
    unwritten: dict[datetime, int] = field(default_factory=dict)  # slot → counted here, not yet written
    written_at: float = 0.0
    # One write at a time: the writes of a client queue on the same row anyway, and in order,
    # `written` is always the latest total.
    writing: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class DueWrite:
    """A counted request whose counts must be written before it is allowed or refused."""

    client_id: str
    mode: str
    tally: _Tally
    slot: datetime
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
        self._slots = Slots.of(window_s)
        self._metrics = metrics
        self._tallies: dict[tuple[str, str], _Tally] = {}
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
        slot = self._slots.start(now)
        limit = self._limit_of(mode)
        with self._lock:
            tally = self._tallies.setdefault((client_id, mode), _Tally())
            tally.unwritten[slot] = tally.unwritten.get(slot, 0) + 1
            unwritten = sum(tally.unwritten.values())
            # `written` only overstates the window's total as slots leave it: safe.
            due = (unwritten >= FLUSH_EVERY or time.monotonic() - tally.written_at >= FLUSH_S
                   or tally.written + unwritten >= limit)
        return DueWrite(client_id, mode, tally, slot, limit, now) if due else None

    def settle(self, due: DueWrite) -> None:
        """Write a due count to the shared rows (blocking); ApiError 429 when over the limit."""
        with due.tally.writing:
            if self._write(due) > due.limit:
                self._refuse(due)

    def _write(self, due: DueWrite) -> int:
        """Add the tally's unwritten requests to the shared rows; the window's total now known."""
        tally = due.tally
        with self._lock:
            adding, tally.unwritten = tally.unwritten, {}
        if adding:
            with self._engine.begin() as conn:
                # No wait for the WAL flush: the row lock is held for less time.
                conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
                total = self._add(conn, due, adding)
            self._metrics.db("update")
        with self._lock:
            if adding:
                tally.written = total
            tally.written_at = time.monotonic()
            return tally.written + sum(tally.unwritten.values())

    def _add(self, conn: Connection, due: DueWrite, adding: dict[datetime, int]) -> int:
        """Add the counts to their slots and sum the window at `due.now`, in one statement."""
        oldest = self._slots.oldest(due.now)
        mine = (windows.c.client_id == due.client_id) & (windows.c.mode == due.mode)
        upsert = insert(windows).values([
            {"client_id": due.client_id, "mode": due.mode, "window_start": slot, "count": count}
            for slot, count in adding.items()])
        written = (upsert.on_conflict_do_update(index_elements=["client_id", "mode", "window_start"],
                                                set_={"count": windows.c.count + upsert.excluded.count})
                   .returning(windows.c.window_start, windows.c.count).cte("written"))
        # The other slots as the statement's snapshot saw them; the written ones as they are now.
        others = (select(func.coalesce(func.sum(windows.c.count), 0))
                  .where(mine, windows.c.window_start >= oldest,
                         windows.c.window_start.not_in(list(adding)))
                  .scalar_subquery())
        rows = conn.execute(select(written.c.window_start, written.c.count, others)).all()
        now_in: dict[datetime, int] = {slot: int(count) for slot, count, _ in rows}
        total = int(rows[0][2]) + sum(count for slot, count in now_in.items() if slot >= oldest)
        newest = max(adding)
        if now_in.get(newest) == adding[newest]:
            # This write opened the slot: drop the ones that left the window.
            conn.execute(delete(windows).where(mine, windows.c.window_start < oldest))
        return total

    def _refuse(self, due: DueWrite) -> None:
        """Take the refused request's count back and raise 429 with when to retry."""
        mine = (windows.c.client_id == due.client_id) & (windows.c.mode == due.mode)
        with self._engine.begin() as conn:
            conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
            conn.execute(update(windows).where(mine, windows.c.window_start == due.slot)
                         .values(count=windows.c.count - 1))
            counts = [(slot, int(count)) for slot, count in conn.execute(
                select(windows.c.window_start, windows.c.count)
                .where(mine, windows.c.window_start >= self._slots.oldest(due.now))).all()]
        self._metrics.db("update")
        with self._lock:
            due.tally.written = sum(count for _, count in counts)
        # None: the window has room already (the refusing total held other threads' unwritten counts).
        reopens = self._slots.reopens_at(counts, due.limit) or due.now + timedelta(seconds=1)
        retry_after = max(1, math.ceil((reopens - due.now).total_seconds()))
        raise ApiError(
            429, "RATE_LIMIT_EXCEEDED",
            f"Rate limit of {due.limit} {due.mode} requests per {self._window_s} s exceeded; "
            f"retry in {retry_after} s",
            details={"mode": due.mode, "limit": due.limit, "window_seconds": self._window_s,
                     "retry_after": retry_after},
            headers={"Retry-After": str(retry_after), "X-RateLimit-Limit": str(due.limit),
                     "X-RateLimit-Remaining": "0",
                     "X-RateLimit-Reset": str(math.ceil(reopens.timestamp()))})
