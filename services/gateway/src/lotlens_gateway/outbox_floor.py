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
- Every id below the highest visible one was handed out before that row's, so by a transaction
  that had its transaction id already (`Outbox.append` takes it first, `pg_current_xact_id()`),
  below the snapshot's `xmax`. Once the oldest running transaction (`pg_snapshot_xmin`) is at or
  past that `xmax`, all of them have committed or aborted, and the round's read, from the old
  floor, saw their rows: the new floor is the proposal or that read's lowest unpublished id,
  whichever is lower.

A floor is this process's own and starts at 0 (the first round walks every row kept); replicas
need not agree, since a row once published stays published. A transaction writing for a long
time (or one of another database on the same server, whose ids share the horizon) only holds
the floor back: the read then walks more published rows, and misses none. (Only one with a
transaction id: a read-only one, a pg_dump's, holds a snapshot and no id, and holds nothing.)
How far back, and for how long, is on `/metrics` (`behind`, `held_s`; `outbox_gauges`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from sqlalchemy import BigInteger, Connection, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

# The relay unpacks each row as exactly (id, job_id, event_type, payload): a column added here is
# one added there.
# One statement, so one snapshot: the topic's rows, then one row of the horizon and the highest
# id it shows. (Those three on every row, from a lateral join, cost the relay's Python 1.4 us a
# row read where this takes 0.67 and the plain read of the rows took 0.61, the sort included:
# `read` sorts the rows rather than rely on the append keeping them in order.)
_READ = text("""
WITH horizon AS MATERIALIZED (
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS oldest,
           pg_snapshot_xmax(pg_current_snapshot())::text AS next,
           (SELECT max(id) FROM outbox) AS top)
(SELECT id, job_id, event_type, payload FROM outbox
  WHERE id >= :below AND topic = :topic AND published_at IS NULL AND NOT (id = ANY(:held))
  ORDER BY id LIMIT :room)
UNION ALL
SELECT NULL, oldest, next, CAST(top AS text) FROM horizon""").bindparams(
    bindparam("held", type_=ARRAY(BigInteger)))


@dataclass
class Floor:
    """A topic's floor, and the proposal waiting for its transactions to end."""

    below: int = 0
    # (proposed floor, the `xmax` of the snapshot it was seen in), and when it was made (the
    # caller's monotonic clock)
    proposed: tuple[int, int] | None = None
    proposed_at: float = 0.0
    # From the last read: the horizon's oldest running transaction and `xmax`, the highest id, and
    # the last id read (None: none).
    _seen: tuple[int, int, int, int | None] = field(default=(0, 0, 0, None))

    def read(self, conn: Connection, topic: str, held: Sequence[int], room: int) -> list[Any]:
        """The topic's unpublished rows from the floor in id order, at most `room`, but `held`."""
        found = conn.execute(_READ, {"below": self.below, "topic": topic, "held": list(held),
                                     "room": room}).all()
        horizon = next(row for row in reversed(found) if row[0] is None)
        oldest, following, top = int(horizon[1]), int(horizon[2]), int(horizon[3] or 0)
        rows = sorted((row for row in found if row[0] is not None), key=itemgetter(0))
        self._seen = (oldest, following, top, rows[-1].id if rows else None)
        return rows

    def moved(self, full: bool, unpublished: Collection[int], now: float) -> None:
        """After a read (`full`: it returned as many rows as it was asked) and the round's commit
        at `now`: take up the proposal its transactions have ended for, propose anew.
        `unpublished`: the ids read or held before that are not marked yet."""
        oldest, following, top, last = self._seen
        lowest = last + 1 if full and last is not None else top + 1
        if unpublished:
            lowest = min(lowest, *unpublished)
        if self.proposed is not None and self.proposed[1] <= oldest:
            self.below = max(self.below, min(self.proposed[0], lowest))
            self.proposed = None
        if self.proposed is None:
            self.proposed, self.proposed_at = (lowest, following), now

    def behind(self, kept_from: int = 0) -> int:
        """Ids from the floor (or `kept_from`, the lowest id the outbox keeps, when higher) to the
        highest id the last read saw: the rows each read walks, of every topic, published or not.
        Counted from the floor alone, a floor at 0 (a restart, a failed round) read as the whole
        history of ids, most of them pruned long ago."""
        top = self._seen[2]
        return max(top + 1 - max(self.below, kept_from), 0) if top else 0

    def held_s(self, oldest: int, now: float) -> float:
        """How long the proposal has waited, while `oldest` (the horizon's oldest running
        transaction, read at `now`) had its id before the proposal was made: that transaction has had
        its id at least this long (it may have had it longer: the time is this process's, from
        its proposal). 0 when it waits for nothing."""
        if self.proposed is None or self.proposed[1] <= oldest:
            return 0.0
        return max(now - self.proposed_at, 0.0)
