"""Where the relay's read of a topic's unpublished outbox rows starts: its floor.

No index says which rows are unpublished (migration 0039): an index on `published_at`, or one
partial on it, took a new entry in every index at each marking (9.5 us a row, where a heap-only
update takes 3.3, and 1.3 kB of WAL where it takes under 0.1). So the relay walks the primary key
from the topic's floor: every row below it is published.

The floor must never pass a row that becomes visible later: an append still running holds ids
below rows already committed (a 50,000-row COPY takes a second). So a round only proposes a
floor, and a later round takes it up once every transaction that could hold an id below it has
ended:

- The proposal, made once the round's marking has committed, is the lowest id the round's
  snapshot showed unpublished that is still unpublished (read and not marked, held by the
  producer, acknowledged and not marked yet), else the one after the last row read when the read
  was full, else the one past the highest id the snapshot showed. (Made before the marking, it
  kept the floor a round further behind: each read walked two rounds' published rows, 5 ms a
  round of 5,000, where it now walks one.)
- Every id below the highest visible one was handed out before that row's (the identity's
  sequence caches no ids, `CACHE 1`, which a test holds: a session's cached ids go out after
  higher ones), so by a transaction that had its transaction id already (`Outbox.append` takes it
  first, `pg_current_xact_id()`), before the read. The bound of the proposal is a transaction id
  handed out after the read: the round's own, taken before it commits (the marking has one; a
  round that marks nothing takes one only when it proposes). Once the oldest running transaction
  (`pg_snapshot_xmin`) is at or past that bound, all of them have committed or aborted, and the
  round's read, from the old floor, saw their rows: the new floor is the proposal or that read's
  lowest unpublished id, whichever is lower.
- The read's own snapshot gives no such bound: its `xmax` is one past the latest transaction
  that *ended*, and the newest running one is at or past it, left out of the snapshot's running
  list. An append whose transaction id was the newest, holding ids below the rows of an older
  one that committed first, ran unseen: the floor passed its rows, which stayed unpublished
  until the gateway restarted.

A floor is this process's own and starts at 0 (the first round walks every row kept); replicas
need not agree, since a row once published stays published. A transaction writing for a long
time (or one of another database on the same server, whose ids share the horizon) only holds
the floor back: the read then walks more published rows, and misses none. (Only one with a
transaction id: a read-only one, a pg_dump's, holds a snapshot and no id, and holds nothing.)
How far back, and for how long, is on `/metrics` (`behind`, `held_s`; `outbox_gauges`).

Every `AUDIT_EVERY_S` an audit checks the next `AUDIT_IDS` ids below the floor (from where the
last one ended; from the lowest id kept once it reaches the floor) for unpublished rows: a floor
that passed a row is a defect, which left that row unpublished for as long as the process ran
(the `xmax` above), and the backlog gauges, counting from the floor, did not show it. The floor
goes back to the first one found, and the count is on `/metrics`
(`lotlens_outbox_rows_left_below_floor_total`). A slice at a time: the whole of an outbox kept
through a long result-store outage, read at once, would outlast the statement timeout. A slice
of 250,000 ids reads about 50,000 pages (half full, 600-byte payloads): 0.15 s from the OS's
cache, once a minute; an hour of 1,000 rows a second is audited in 15 minutes. (Each topic's
audit walks every topic's ids, and above about 4,000 new ids a second the floor moves away
faster than the audit: a row passed then waits for a quieter hour, or a restart.)

A floor also starts over (from 0) when the database server changed under it: its start time
differs, or its oldest running transaction went back. A promoted replica that had not received
the last commits hands their ids out again, transaction ids and outbox ids alike, below a floor
that had passed them, and the relay's round often meets no error in a failover (the pool
reconnects once another user of the engine has met the lost connection, or a pooler hides it).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import BigInteger, Connection, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

log = logging.getLogger(__name__)

# The relay unpacks each row as exactly (id, job_id, event_type, payload): a column added here is
# one added there.
# One statement, so one snapshot: the topic's rows, then one row of the horizon and the highest
# id it shows. (Those three on every row, from a lateral join, cost the relay's Python 1.4 us a
# row read where this takes 0.67 and the plain read of the rows took 0.61, the sort included:
# `read` sorts the rows rather than rely on the append keeping them in order.)
_READ = text("""
WITH horizon AS MATERIALIZED (
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS oldest,
           -- as a number: its text is in the session's time zone, which pooled sessions need not share
           extract(epoch FROM pg_postmaster_start_time())::text AS started,
           (SELECT max(id) FROM outbox) AS top)
(SELECT id, job_id, event_type, payload FROM outbox
  WHERE id >= :below AND topic = :topic AND published_at IS NULL AND NOT (id = ANY(:held))
  ORDER BY id LIMIT :room)
UNION ALL
SELECT NULL, oldest, started, CAST(top AS text) FROM horizon""").bindparams(
    bindparam("held", type_=ARRAY(BigInteger)))

AUDIT_EVERY_S = 60.0
AUDIT_IDS = 250_000
# Where the slice ends (it starts at `after`, or the lowest id kept when higher, and ends at the
# floor at most), and the topic's unpublished rows in it but those the producer holds: how many,
# and the first.
_AUDIT = text("""
WITH span AS MATERIALIZED (SELECT greatest(CAST(:after AS bigint), (SELECT min(id) FROM outbox)) AS lo)
SELECT least(span.lo + :ids, CAST(:below AS bigint)) AS hi, count(o.id), min(o.id)
  FROM span LEFT JOIN outbox AS o
    ON o.id >= span.lo AND o.id < least(span.lo + :ids, CAST(:below AS bigint))
   AND o.topic = :topic AND o.published_at IS NULL AND NOT (o.id = ANY(:held))
 GROUP BY span.lo""").bindparams(bindparam("held", type_=ARRAY(BigInteger)))

# A transaction id handed out after the read (`Floor.bound`): the round's own, assigned here when
# it has none yet (its marking assigns one). Text, as `pg_snapshot_xmin`: both are 64-bit `xid8`.
_BOUND = text("SELECT pg_current_xact_id()::text")


@dataclass
class Floor:
    """A topic's floor, and the proposal waiting for its transactions to end."""

    below: int = 0
    # (proposed floor, its bound: a transaction id handed out after the read it comes from), and
    # when it was made (the caller's monotonic clock)
    proposed: tuple[int, int] | None = None
    proposed_at: float = 0.0
    # From the last read: the horizon's oldest running transaction, the highest id, and the last
    # id read (None: none); and the server's start time.
    _seen: tuple[int, int, int | None] = field(default=(0, 0, None))
    _server: str | None = None
    # When the last audit ran (the caller's monotonic clock), and where the next one starts.
    audited_at: float = float("-inf")
    _audit_after: int = 0

    def read(self, conn: Connection, topic: str, held: Sequence[int], room: int) -> list[Any]:
        """The topic's unpublished rows from the floor in id order, at most `room`, but `held`."""
        found = conn.execute(_READ, {"below": self.below, "topic": topic, "held": list(held),
                                     "room": room}).all()
        horizon = next(row for row in reversed(found) if row[0] is None)
        oldest, server, top = int(horizon[1]), str(horizon[2]), int(horizon[3] or 0)
        if (self._server is not None and server != self._server) or oldest < self._seen[0]:
            log.warning("the database server changed (started %s, was %s; oldest transaction %d, was %d): "
                        "a failover? The outbox relay reads from the lowest id kept again",
                        server, self._server, oldest, self._seen[0])
            self._lower_to(0)  # from the next read: this one read from the old floor
        rows = sorted((row for row in found if row[0] is not None), key=itemgetter(0))
        self._seen, self._server = (oldest, top, rows[-1].id if rows else None), server
        return rows

    def audit(self, conn: Connection, topic: str, held: Sequence[int], now: float) -> int:
        """After the read, once every `AUDIT_EVERY_S` at `now`: the topic's unpublished rows the
        floor passed in the next slice of ids below it (a defect), but `held`; the floor goes back
        to the first of them, so the next round's read has them. 0 when none or not due."""
        if now - self.audited_at < AUDIT_EVERY_S:
            return 0
        self.audited_at = now
        if self.below == 0:
            return 0
        hi, found, first = conn.execute(_AUDIT, {"after": self._audit_after, "ids": AUDIT_IDS,
                                                      "below": self.below, "topic": topic,
                                                      "held": list(held)}).one()
        self._audit_after = hi if hi < self.below else 0
        if found:
            self._lower_to(first)
        return int(found)

    def _lower_to(self, row_id: int) -> None:
        """Never past `row_id` again until a proposal takes the floor past it (walking more rows is
        always safe)."""
        self.below, self.proposed = min(self.below, row_id), None

    def bound(self, conn: Connection) -> int | None:
        """In the read's transaction, before it commits: the bound `moved` proposes with, when this
        round proposes (no proposal waits, or the waiting one is taken up, and ids lie past the
        floor); else None. Taking one gives a transaction that marks nothing an id (a commit
        record), so an idle relay, its floor at the top, takes none."""
        oldest, top, _last = self._seen
        waiting = self.proposed is not None and self.proposed[1] > oldest
        if waiting or top < self.below:
            return None
        return int(conn.execute(_BOUND).scalar_one())

    def moved(self, full: bool, unpublished: Collection[int], now: float, bound: int | None) -> None:
        """After a read (`full`: it returned as many rows as it was asked) and the round's commit
        at `now`: take up the proposal its transactions have ended for, propose anew with `bound`
        (`Floor.bound`; None: none). `unpublished`: the ids read or held before that are not
        marked yet."""
        oldest, top, last = self._seen
        lowest = last + 1 if full and last is not None else top + 1
        if unpublished:
            lowest = min(lowest, *unpublished)
        if self.proposed is not None and self.proposed[1] <= oldest:
            self.below = max(self.below, min(self.proposed[0], lowest))
            self.proposed = None
        if self.proposed is None and bound is not None:
            self.proposed, self.proposed_at = (lowest, bound), now

    def behind(self, kept_from: int = 0) -> int:
        """Ids from the floor (or `kept_from`, the lowest id the outbox keeps, when higher) to the
        highest id the last read saw: the rows each read walks, of every topic, published or not.
        Counted from the floor alone, a floor at 0 (a restart, a failed round) read as the whole
        history of ids, most of them pruned long ago."""
        top = self._seen[1]
        return max(top + 1 - max(self.below, kept_from), 0) if top else 0

    def held_s(self, oldest: int, now: float) -> float:
        """How long the proposal has waited, while `oldest` (the horizon's oldest running
        transaction, read at `now`) had its id before the proposal's bound: that transaction has had
        its id at least this long (it may have had it longer: the time is this process's, from
        its proposal). 0 when it waits for nothing."""
        if self.proposed is None or self.proposed[1] <= oldest:
            return 0.0
        return max(now - self.proposed_at, 0.0)
