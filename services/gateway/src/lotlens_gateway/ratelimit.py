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
limit. The known total holds the counts being written (`pending`) until their write returns, so
one instance decides exactly, however many requests it counts meanwhile; several overshoot by at
most what the others counted since their last write. A request arriving while a total written
within `FLUSH_S` already holds the limit is refused in memory: nothing is counted, so nothing is
written or taken back, and a client flooding past its limit holds no thread-pool worker on its
write lock (each such refusal was a write and a take-back, two transactions). Another instance's
take-back within those `FLUSH_S` can thus refuse a request the window had room for.
A write adds its counts and reads the window's counts in one statement; the first
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

from sqlalchemy import Connection, Engine, delete, select, text, update
from sqlalchemy.dialects.postgresql import insert

from lotlens_common.tables import rate_limit_windows as windows
from lotlens_gateway.errors import ApiError
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.slots import Slots

FLUSH_S = 0.2
FLUSH_EVERY = 50


@dataclass
class _Tally:
    """One client's requests of one mode, as this instance knows them, per slot."""

    written: dict[datetime, int] = field(default_factory=dict)  # the window's shared counts at the last write
    # Counted here and being written: still known until the write returns, or the requests counted
    # meanwhile saw neither them nor their total and one instance overshot.
    pending: dict[datetime, int] = field(default_factory=dict)
    unwritten: dict[datetime, int] = field(default_factory=dict)  # counted here, not yet written
    written_at: float = 0.0  # monotonic; 0: never
    # One write at a time: the writes of a client queue on the same row anyway, and in order,
    # `written` is always the latest total.
    writing: threading.Lock = field(default_factory=threading.Lock)

    def known(self, oldest: datetime) -> dict[datetime, int]:
        """The counts of the slots from `oldest` on: written, being written and not yet written."""
        counts: dict[datetime, int] = {}
        for part in (self.written, self.pending, self.unwritten):
            for slot, count in part.items():
                if slot >= oldest:
                    counts[slot] = counts.get(slot, 0) + count
        return counts


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

        ApiError 429 at once, counting nothing, when a total written within `FLUSH_S` already holds
        the limit: a client flooding past its limit costs no write and holds no thread. Returning
        None means the request is allowed: a count reaching the limit is always due.
        """
        slot, oldest = self._slots.start(now), self._slots.oldest(now)
        limit = self._limit_of(mode)
        with self._lock:
            tally = self._tallies.setdefault((client_id, mode), _Tally())
            known = tally.known(oldest)
            fresh = time.monotonic() - tally.written_at < FLUSH_S
            full = fresh and sum(known.values()) >= limit
            if not full:
                tally.unwritten[slot] = tally.unwritten.get(slot, 0) + 1
                due = (not fresh or sum(tally.unwritten.values()) >= FLUSH_EVERY
                       or sum(known.values()) + 1 >= limit)
        if full:
            raise self._too_many(mode, limit, now, known)
        return DueWrite(client_id, mode, tally, slot, limit, now) if due else None

    def settle(self, due: DueWrite) -> None:
        """Write a due count to the shared rows (blocking); ApiError 429 when over the limit."""
        with due.tally.writing:
            if sum(self._write(due).values()) > due.limit:
                self._refuse(due)

    def _write(self, due: DueWrite) -> dict[datetime, int]:
        """Add the tally's unwritten requests to the shared rows; the window's counts now known."""
        tally, oldest = due.tally, self._slots.oldest(due.now)
        with self._lock:
            tally.pending, tally.unwritten = tally.unwritten, {}
        if tally.pending:
            try:
                with self._engine.begin() as conn:
                    # No wait for the WAL flush: the row lock is held for less time.
                    conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
                    written = self._add(conn, due, tally.pending, oldest)
            except BaseException:
                with self._lock:  # written by the next write, all but this request's own
                    for slot, count in tally.pending.items():
                        tally.unwritten[slot] = tally.unwritten.get(slot, 0) + count
                    tally.pending = {}
                    # It is answered 503, not accepted: kept, it was charged once PostgreSQL came
                    # back, and a client that polled through an outage got 429s for a minute after.
                    # (Absent when another thread's write took its count along already.)
                    if due.slot in tally.unwritten:
                        tally.unwritten[due.slot] -= 1
                        if not tally.unwritten[due.slot]:
                            del tally.unwritten[due.slot]
                raise
            self._metrics.db("update")
            with self._lock:
                tally.written, tally.pending, tally.written_at = written, {}, time.monotonic()
        with self._lock:
            return tally.known(oldest)

    def _add(self, conn: Connection, due: DueWrite, adding: dict[datetime, int],
             oldest: datetime) -> dict[datetime, int]:
        """Add the counts to their slots and read the window's counts at `due.now`, in one statement."""
        mine = (windows.c.client_id == due.client_id) & (windows.c.mode == due.mode)
        upsert = insert(windows).values([
            {"client_id": due.client_id, "mode": due.mode, "window_start": slot, "count": count}
            for slot, count in adding.items()])
        written = (upsert.on_conflict_do_update(index_elements=["client_id", "mode", "window_start"],
                                                set_={"count": windows.c.count + upsert.excluded.count})
                   .returning(windows.c.window_start, windows.c.count).cte("written"))
        # The other slots as the statement's snapshot saw them; the written ones as they are now.
        others = (select(windows.c.window_start, windows.c.count)
                  .where(mine, windows.c.window_start >= oldest,
                         windows.c.window_start.not_in(list(adding))))
        rows = conn.execute(select(written.c.window_start, written.c.count).union_all(others)).all()
        counts = {slot: int(count) for slot, count in rows}
        newest = max(adding)
        if counts.get(newest) == adding[newest]:
            # This write opened the slot: drop the ones that left the window.
            conn.execute(delete(windows).where(mine, windows.c.window_start < oldest))
        return {slot: count for slot, count in counts.items() if slot >= oldest}

    def _refuse(self, due: DueWrite) -> None:
        """Take the refused request's count back and raise 429 with when to retry."""
        mine = (windows.c.client_id == due.client_id) & (windows.c.mode == due.mode)
        with self._engine.begin() as conn:
            conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
            conn.execute(update(windows).where(mine, windows.c.window_start == due.slot)
                         .values(count=windows.c.count - 1))
        self._metrics.db("update")
        with self._lock:
            written = due.tally.written
            written[due.slot] = max(0, written.get(due.slot, 0) - 1)
            known = due.tally.known(self._slots.oldest(due.now))
        raise self._too_many(due.mode, due.limit, due.now, known)

    def _too_many(self, mode: str, limit: int, now: datetime, counts: dict[datetime, int]) -> ApiError:
        """The 429 of a request at `now` refused over the window's `counts`, with when to retry."""
        # None: the window has room already (the refusing total held other threads' unwritten counts).
        reopens = self._slots.reopens_at(counts.items(), limit) or now + timedelta(seconds=1)
        # At most the window: requests of this client counted in a later second than this one (a
        # thread that wrote first, another instance's clock ahead) put the reopening a fraction
        # past it, and a client told 61 s where the documents say 60 gave up. Told the window, it
        # is at worst refused once more, with a Retry-After of 1.
        reopens = min(reopens, now + timedelta(seconds=self._window_s))
        retry_after = max(1, math.ceil((reopens - now).total_seconds()))
        return ApiError(
            429, "RATE_LIMIT_EXCEEDED",
            f"Rate limit of {limit} {mode} requests per {self._window_s} s exceeded; "
            f"retry in {retry_after} s",
            details={"mode": mode, "limit": limit, "window_seconds": self._window_s,
                     "retry_after": retry_after},
            headers={"Retry-After": str(retry_after), "X-RateLimit-Limit": str(limit),
                     "X-RateLimit-Remaining": "0",
                     "X-RateLimit-Reset": str(math.ceil(reopens.timestamp()))})
