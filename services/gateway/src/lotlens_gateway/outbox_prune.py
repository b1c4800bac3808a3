"""Deleting published outbox rows: past their retention, and only once the read models hold them.

The gateway reads a job through its own outbox rows until the result-store has projected them
(`overlay.py`): its `JobSubmitted` until the job's row is written, its `JobCancelled` until that
row is terminal, each `LotSubmitted` until the lot's row is (or the job completed or failed, which
the result-store decides only once every lot's submission is projected). Deleted by their age
alone, the rows of a result-store more than the retention behind went first: a job that had got
201 was a 404 to its status, results and cancel, and left the jobs list; a job cancelled with 200
read as running again. Other events (webhook redelivery requests) are read back for their
rate-limit window only, and go by age.

Each round is one transaction: the first `rows` rows in `id` order published before the cutoff,
locked (SKIP LOCKED: the replicas share the work rather than queue on each other's locks), judged
by primary-key lookups (the job's row; for a lot of a running job, its row, whose id only the
payload holds), and those the read models hold deleted. The next round starts after the last row
this one examined, and so does the next call (`Position`, an id): a round deleting none ends the
call (the rows are waiting for the result-store, and newer ones are projected after them, so a
long result-store outage costs one round a minute, not a scan of its whole backlog at every
prune), and the next call goes on past them. The rows before the cutoff all examined, the next
call starts at the oldest again, for the rows kept that the read models hold by then. Begun at
the oldest at every call, a block of rows the read models never hold (a large job's lots
dead-lettered) stopped all pruning behind it.

No index holds `published_at` (a marking is then heap-only: `outbox_floor`), so the rows are
walked by `id`, which is about the order they were published in, and a round stops at the first
row published after the cutoff: the rows behind it are younger but for those an outage delayed,
which wait until it has aged too (at most the outage's length longer). Unpublished rows are
passed over. Without that stop, each call walked every row kept younger than the cutoff.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import Engine, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import Text

from lotlens_common.events import TERMINAL_JOB_STATUSES, JobCancelled, JobSubmitted, LotSubmitted


def _listed(statuses: Collection[str]) -> str:
    return "(" + ", ".join(f"'{status}'" for status in sorted(statuses)) + ")"


# The rows after `:after_id` up to the first published after the cutoff (an InitPlan, one walk
# of the primary key that stops there), in `id` order.
_OLDEST = text(f"""
SELECT o.id,
       CASE o.event_type
           WHEN '{JobSubmitted.event_type}' THEN j.created_at IS NOT NULL
           WHEN '{JobCancelled.event_type}' THEN coalesce(j.status IN {_listed(TERMINAL_JOB_STATUSES)}, false)
           WHEN '{LotSubmitted.event_type}' THEN CASE
               WHEN j.status IS NULL THEN false
               WHEN j.status IN {_listed(TERMINAL_JOB_STATUSES - {"cancelled"})} THEN true
               ELSE EXISTS (SELECT FROM lots AS l
                            WHERE l.job_id = o.job_id AND l.seq IS NOT NULL
                              AND l.lot_id = CAST(o.payload AS json) -> 'data' ->> 'lot_id') END
           ELSE true END AS held
  FROM outbox AS o LEFT JOIN jobs AS j ON j.job_id = o.job_id
 WHERE o.topic = ANY(:topics) AND o.id > :after_id AND o.published_at < :cutoff
   AND o.id < coalesce((SELECT min(y.id) FROM outbox AS y
                         WHERE y.id > :after_id AND y.topic = ANY(:topics) AND y.published_at >= :cutoff),
                       9223372036854775807)
 ORDER BY o.id
 LIMIT :rows
   FOR UPDATE OF o SKIP LOCKED""").bindparams(bindparam("topics", type_=ARRAY(Text)))

_DELETE = text("DELETE FROM outbox WHERE id = ANY(CAST(:ids AS bigint[]))")

# Where a prune goes on: after this row's id.
Position = int
OLDEST: Position = 0


def prune_held(engine: Engine, topics: Sequence[str], cutoff: datetime, rows: int, rounds: int,
               after: Position = OLDEST) -> tuple[int, Position]:
    """Delete the rows of `topics` published before `cutoff`, after `after`, that the read models
    hold, `rows` examined per transaction and at most `rounds` transactions; how many rows went,
    and where the next call goes on."""
    pruned = 0
    for _ in range(rounds):
        with engine.begin() as conn:
            found = conn.execute(_OLDEST, {"topics": list(topics), "cutoff": cutoff, "after_id": after,
                                           "rows": rows}).all()
            held = [row_id for row_id, is_held in found if is_held]
            if held:
                conn.execute(_DELETE, {"ids": held})
        pruned += len(held)
        if len(found) < rows:
            return pruned, OLDEST
        after = found[-1][0]
        if not held:
            break
    return pruned, after
