"""The work store on PostgreSQL: stage_lots, stage_shards, stage_jobs; every state change is here
(lots arrive through `postgres_arrivals`).

Functions take a connection (the intake handlers call them inside their consumer transaction);
`PostgresWorkStore` is the runner's port over them, one transaction per call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Select, Text, any_, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, insert

from lotlens_common.row_sets import json_rows
from lotlens_common.stage.core.rule import WaitingJob
from lotlens_common.stage.ports import Shard
from lotlens_common.stage.work import LotWork, StageWork, read_work, stored_work
from lotlens_common.tables import stage_jobs, stage_lots, stage_shards

W = TypeVar("W", bound=StageWork)

# stage_lots.status values. A lot stays `waiting` while it waits for a shard and while it is in
# one (`IN_QUEUE`); a lot of a shard closed `collected` that is still waiting is done: the lots that
# succeed in a shard's last chunk are not written one by one (`lot_statuses`). `submitted` is a lot
# taken by name.
WAITING, SUBMITTED, DONE, FAILED, CANCELLED, SKIPPED = (
    "waiting", "submitted", "done", "failed", "cancelled", "skipped")

# A lot waiting for a shard: `l` a stage_lots row, `j` its job's stage_jobs row.
IN_QUEUE = "l.status = 'waiting' AND l.place > j.claimed_place"


@dataclass(frozen=True)
class Places:
    """A job's new places: they follow `before`; `cancelled` as of the job's row, locked."""

    before: int
    cancelled: bool


def take_places(conn: Connection, stage: str, counts: dict[str, int]) -> dict[str, Places]:
    """Hand out the next places of each job's queue, with whether the job is cancelled.

    Jobs are locked in job order, so two transactions never deadlock on them; the lock is held to
    the commit, so a claim never passes a place whose lot is not committed yet. The flag is read
    from the locked row: read before, it missed a cancellation committing meanwhile (from another
    topic, often on another instance), and the lot was queued after it and paid for.
    """
    rows = conn.execute(text("""
        INSERT INTO stage_jobs AS j (stage, job_id, last_place)
        SELECT :stage, v.job_id, v.n
          FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(job_id text, n bigint)
         ORDER BY v.job_id
        ON CONFLICT (stage, job_id) DO UPDATE SET last_place = j.last_place + EXCLUDED.last_place
        RETURNING job_id, last_place, cancelled"""),
        {"stage": stage, "rows": json_rows({"job_id": job_id, "n": n} for job_id, n in counts.items())})
    return {row.job_id: Places(row.last_place - counts[row.job_id], row.cancelled) for row in rows}


def cancel_job(conn: Connection, stage: str, job_id: str) -> None:
    """Remember the cancellation; lots not yet sent will never be (those billed: see `stage.cancel`)."""
    conn.execute(insert(stage_jobs).values(stage=stage, job_id=job_id, cancelled=True)
                 .on_conflict_do_update(index_elements=["stage", "job_id"], set_={"cancelled": True}))
    conn.execute(text(f"""
        UPDATE stage_lots AS l SET status = :cancelled, updated_at = now()
          FROM stage_jobs AS j
         WHERE j.stage = :stage AND j.job_id = :job_id AND l.stage = j.stage AND l.job_id = j.job_id
           AND {IN_QUEUE} AND NOT l.work ? 'earlier_usage'"""),
        {"cancelled": CANCELLED, "stage": stage, "job_id": job_id})


def cancelled_jobs(conn: Connection, stage: str, job_ids: Iterable[str]) -> set[str]:
    """Which of these jobs were cancelled."""
    rows = conn.execute(select(stage_jobs.c.job_id).where(
        stage_jobs.c.stage == stage, stage_jobs.c.job_id.in_(list(job_ids)), stage_jobs.c.cancelled))
    return {row.job_id for row in rows}


# Per job with a queue not claimed to its end, its lots waiting for a shard: read from the
# queue's unclaimed end through the place index (a join over the table let the planner scan all of
# it, 55 ms at 100,000 rows, at every tick of an idle stage).
QUEUES = f"""
    FROM stage_jobs j
    CROSS JOIN LATERAL (
        SELECT count(*) AS waiting, max(l.total_lots) AS expected, min(l.enqueued_at) AS oldest,
               max(l.client_id) AS client_id
          FROM stage_lots l
         WHERE l.stage = j.stage AND l.job_id = j.job_id AND {IN_QUEUE}) AS w
   WHERE j.stage = :stage AND j.last_place > j.claimed_place AND w.waiting > 0"""


def waiting_jobs(conn: Connection, stage: str, cancelled_only: bool = False) -> list[WaitingJob]:
    """Jobs with lots waiting for a shard, with what the batching rule needs to know about them.

    How many of the job's lots arrived comes from its counter (`enqueue_arrivals`): counting every
    lot of a 50,000-lot job five times a second was most of what the stage asked of the database.
    `cancelled_only`: a paused stage reads only the cancelled jobs, whose lots it drops."""
    only = " AND j.cancelled" if cancelled_only else ""
    rows = conn.execute(text(f"SELECT j.job_id, w.client_id, w.waiting, j.arrived, w.expected, w.oldest,"
                             f" j.cancelled {QUEUES}{only}"), {"stage": stage})
    return [WaitingJob(row.job_id, row.client_id, row.waiting, row.arrived, row.expected, row.oldest, 0,
                       row.cancelled) for row in rows]


# Estimated tokens of the stage's batches that OpenAI holds, or will (a building shard's claim).
TOKENS_ENQUEUED = ("(SELECT coalesce(sum(estimated_tokens), 0) FROM stage_shards"
                   " WHERE stage = :stage AND status IN ('building', 'submitted'))")


def tokens_enqueued(conn: Connection, stage: str) -> int:
    """Estimated tokens of this stage's batches that OpenAI still holds."""
    return int(conn.execute(text(f"SELECT {TOKENS_ENQUEUED}"), {"stage": stage}).scalar_one())


def _lot(row: Sequence[Any], work_type: type[W]) -> LotWork[W]:
    # The work comes as JSON text: pydantic parses it faster than psycopg2 builds a dict from
    # jsonb and pydantic then validates the dict (about 3x on a 50,000-lot claim). The row is
    # unpacked by position (the order of _COLUMNS): a Row's attribute lookup costs 0.3 us a column.
    job_id, lot_id, client_id, total_lots, work, ahead, attempts = row[-7:]
    return LotWork.made(job_id, lot_id, client_id, total_lots, attempts, read_work(work_type, work, ahead))


# The columns a LotWork is made of, the work as text, in the order `_lot` reads them (last in the
# row). `attempts` counts the sends before this one of a lot in a shard by place (the claim
# writes nothing), and every send of one taken by name.
_COLUMNS = "job_id, lot_id, client_id, total_lots, work::text AS work, work_ahead::text AS work_ahead"
_BY_PLACE = f"{_COLUMNS}, attempts + 1 AS attempts"
_BY_NAME = f"{_COLUMNS}, attempts"


def next_in_queue(conn: Connection, stage: str, job_id: str, limit: int,
                  work_type: type[W]) -> list[tuple[int, LotWork[W]]]:
    """The next `limit` lots waiting in the job's queue with their places, first come first; the
    job's queue stays locked to this transaction (another instance's claim waits for it)."""
    claimed = conn.execute(select(stage_jobs.c.claimed_place).where(
        stage_jobs.c.stage == stage, stage_jobs.c.job_id == job_id).with_for_update()).scalar_one_or_none()
    if claimed is None:
        return []
    rows = conn.execute(text(f"""
        SELECT place, {_BY_PLACE} FROM stage_lots
         WHERE stage = :stage AND job_id = :job_id AND place > :claimed AND status = :waiting
         ORDER BY place LIMIT :limit"""),
        {"stage": stage, "job_id": job_id, "claimed": claimed, "waiting": WAITING, "limit": limit}).all()
    # Fetched at once (`all`): iterated, the result was fetched a row at a time (0.2 us a lot).
    return [(row[0], _lot(row, work_type)) for row in rows]


def create_shard(conn: Connection, stage: str, shard_id: str, lots: Sequence[LotWork[Any]],
                 estimated_tokens: int, places: tuple[int, int] | None = None) -> None:
    """Record a shard before its batch exists, so a crash leaves a trace to recover from.

    With `places` (first, last), the shard holds the job's waiting lots in those places of its
    queue (`next_in_queue` read them), and the queue is claimed up to the last: one row write
    for the whole shard. Without, its lots were taken by name (`claim_named`).
    """
    first, last = places or (None, None)
    conn.execute(stage_shards.insert().values(
        shard_id=shard_id, stage=stage, job_id=lots[0].job_id, client_id=lots[0].client_id,
        attempt=max(lot.attempts for lot in lots), lot_count=len(lots),
        estimated_tokens=estimated_tokens, first_place=first, last_place=last))
    if last is not None:
        conn.execute(update(stage_jobs).where(stage_jobs.c.stage == stage,
                                              stage_jobs.c.job_id == lots[0].job_id)
                     .values(claimed_place=last, updated_at=func.now()))


def save_work(conn: Connection, stage: str, lots: Sequence[LotWork[Any]]) -> None:
    """Persist what preparation learnt about one job's lots (e.g. which images are reachable);
    one statement for the whole chunk (an executemany is one round trip per lot)."""
    if not lots:
        return
    conn.execute(text("""
        UPDATE stage_lots AS s SET work = v.work, work_ahead = v.work_ahead
          FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(lot_id text, work jsonb, work_ahead jsonb)
         WHERE s.stage = :stage AND s.job_id = :job_id AND s.lot_id = v.lot_id"""),
        {"stage": stage, "job_id": lots[0].job_id, "rows": json_rows(
            dict(zip(("work", "work_ahead"), stored_work(lot.work), strict=True), lot_id=lot.lot_id)
            for lot in lots)})


def set_status(conn: Connection, stage: str, job_id: str, lot_ids: Sequence[str], status: str,
               error: str | None = None) -> None:
    """Settle lots (done, failed, cancelled)."""
    if lot_ids:
        conn.execute(update(stage_lots)
                     .where(stage_lots.c.stage == stage, stage_lots.c.job_id == job_id,
                            stage_lots.c.lot_id == any_(_text_array(lot_ids)))
                     .values(status=status, updated_at=func.now(), last_error=error))


def fail(conn: Connection, stage: str, job_id: str, failed: Mapping[str, Sequence[str]]) -> None:
    """Fail lots for good, each with its reason, in one statement: reasons name each lot's detail
    (the languages it got wrong, its images), so a statement per reason was one per lot."""
    if failed:
        conn.execute(text("""
            UPDATE stage_lots AS l SET status = :failed, last_error = v.reason, updated_at = now()
              FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(lot_id text, reason text)
             WHERE l.stage = :stage AND l.job_id = :job_id AND l.lot_id = v.lot_id"""),
            {"failed": FAILED, "stage": stage, "job_id": job_id,
             "rows": json_rows({"lot_id": lot_id, "reason": reason}
                               for reason, lot_ids in failed.items() for lot_id in lot_ids)})


def requeue(conn: Connection, stage: str, job_id: str, lot_ids: Sequence[str],
            error: str | None = None, sent: bool = True) -> None:
    """Send lots of a shard back to the end of their job's queue, freed from the shard.

    The send they come back from is counted when it was `sent`: a lot in a shard by place was not
    written when it was taken (`next_in_queue` adds that send to what it reads), one taken by
    name was (a send OpenAI never ran is taken back). A cancelled job's too: see `stage.cancel`.
    """
    if not lot_ids:
        return
    places = take_places(conn, stage, {job_id: len(lot_ids)})[job_id]
    conn.execute(text("""
        UPDATE stage_lots AS l
           SET attempts = l.attempts + CASE WHEN l.status = :waiting THEN :sent ELSE :sent - 1 END,
               status = :waiting, shard_id = NULL, place = v.place, last_error = :error,
               enqueued_at = now(), updated_at = now()
          FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(lot_id text, place bigint)
         WHERE l.stage = :stage AND l.job_id = :job_id AND l.lot_id = v.lot_id"""),
        {"waiting": WAITING, "sent": int(sent), "error": error, "stage": stage, "job_id": job_id,
         "rows": json_rows({"lot_id": lot_id, "place": place}
                           for place, lot_id in enumerate(lot_ids, start=places.before + 1))})


def _text_array(values: Sequence[str]) -> Any:
    """One array parameter: an IN list of 1,000 ids is 1,000 parameters for the driver to quote
    and the server to parse (the larger part of settling a chunk of lots)."""
    return bindparam(None, list(values), type_=ARRAY(Text))


def close_shard(conn: Connection, shard_id: str, status: str, batch_status: str | None) -> None:
    """The shard needs no more attention (collected, or empty)."""
    conn.execute(update(stage_shards).where(stage_shards.c.shard_id == shard_id).values(
        status=status, batch_status=batch_status, estimated_tokens=0, updated_at=func.now()))


def note_batch_status(conn: Connection, shard_id: str, batch_status: str) -> None:
    """Remember the batch's latest status (for metrics and operators) while the shard is submitted:
    it is noted without the shard's lock, and a collected shard keeps its final status."""
    conn.execute(update(stage_shards).where(stage_shards.c.shard_id == shard_id,
                                            stage_shards.c.status == "submitted")
                 .values(batch_status=batch_status, updated_at=func.now()))


def shards(conn: Connection, stage: str, status: str) -> list[Shard]:
    """The stage's shards in a status, oldest first."""
    rows = conn.execute(_shards().where(stage_shards.c.stage == stage, stage_shards.c.status == status)
                        .order_by(stage_shards.c.created_at))
    return [_shard(r) for r in rows]


def shard_lots(conn: Connection, stage: str, shard_id: str, work_type: type[W],
               sent: Mapping[str, LotWork[W]] | None = None) -> list[LotWork[W]]:
    """The lots a shard still holds: those waiting in its places, or those taken by name.

    With `sent` (the lots this process put in the shard's batch, by id), which lots the shard
    still holds is read here and their work taken from `sent`, not read and parsed again.
    """
    row = conn.execute(select(stage_shards.c.job_id, stage_shards.c.first_place, stage_shards.c.last_place)
                       .where(stage_shards.c.shard_id == shard_id)).first()
    if row is None:
        return []
    params = {"stage": stage, "job_id": row.job_id, "shard_id": shard_id, "first": row.first_place,
              "last": row.last_place, "waiting": WAITING, "submitted": SUBMITTED}
    if row.first_place is None:
        columns, held = _BY_NAME, "shard_id = :shard_id AND status = :submitted"
    else:
        columns, held = _BY_PLACE, "place BETWEEN :first AND :last AND status = :waiting"
    where = f"FROM stage_lots WHERE stage = :stage AND job_id = :job_id AND {held}"
    if sent is not None:
        lot_ids = conn.execute(text(f"SELECT lot_id {where}"), params).scalars().all()
        if all(lot_id in sent for lot_id in lot_ids):
            return [sent[lot_id] for lot_id in lot_ids]
    return [_lot(lot, work_type) for lot in conn.execute(text(f"SELECT {columns} {where}"), params)]


@dataclass(frozen=True)
class LotState:
    """A lot as the stage reads it: status, the attempt it is on or ended at (`LotWork.attempts`'
    count; 0: never sent) and the error that last sent it back or failed it."""

    lot_id: str
    status: str
    attempt: int
    last_error: str | None


def lot_states(conn: Connection, stage: str, job_id: str) -> list[LotState]:
    """Each lot of the job: `submitted` while in a shard, `done` once its shard was collected.
    A lot in a shard by place has not had that send written (`_BY_PLACE`), one taken by name has."""
    rows = conn.execute(text("""
        SELECT l.lot_id,
               CASE WHEN l.status = :waiting AND l.place > j.claimed_place THEN :waiting
                    WHEN l.status IN (:waiting, :submitted)
                         THEN CASE WHEN coalesce(s.status, p.status) = 'collected' THEN :done
                                   ELSE :submitted END
                    ELSE l.status END AS status,
               l.attempts + CASE WHEN l.shard_id IS NULL AND p.shard_id IS NOT NULL THEN 1 ELSE 0 END
                   AS attempt,
               l.last_error
          FROM stage_lots l
          JOIN stage_jobs j ON j.stage = l.stage AND j.job_id = l.job_id
          LEFT JOIN stage_shards s ON s.shard_id = l.shard_id
          LEFT JOIN stage_shards p ON p.stage = l.stage AND p.job_id = l.job_id
                                  AND l.place BETWEEN p.first_place AND p.last_place
         WHERE l.stage = :stage AND l.job_id = :job_id"""),
        {"waiting": WAITING, "submitted": SUBMITTED, "done": DONE, "stage": stage, "job_id": job_id})
    return [LotState(row.lot_id, row.status, int(row.attempt), row.last_error) for row in rows]


def lot_statuses(conn: Connection, stage: str, job_id: str) -> dict[str, str]:
    """Each lot of the job and its status (`lot_states`)."""
    return {lot.lot_id: lot.status for lot in lot_states(conn, stage, job_id)}


def shard_trace(conn: Connection, stage: str, shard_id: str) -> dict[str, str]:
    """The trace context in one lot's work of the shard's job (all of a job's lots carry its trace)."""
    carrier = conn.execute(select(stage_lots.c.work["trace"]).where(
        stage_lots.c.stage == stage,
        stage_lots.c.job_id == select(stage_shards.c.job_id).where(
            stage_shards.c.shard_id == shard_id).scalar_subquery()).limit(1)).scalar_one_or_none()
    return dict(carrier) if isinstance(carrier, dict) else {}


def known_batches(conn: Connection, batch_ids: Sequence[str]) -> set[str]:
    """Those of the batch ids some shard has on record."""
    if not batch_ids:
        return set()
    rows = conn.execute(select(stage_shards.c.batch_id).where(stage_shards.c.batch_id.in_(list(batch_ids))))
    return {row.batch_id for row in rows}


def job_known(conn: Connection, stage: str, job_id: str) -> bool:
    """Whether the stage has ever had lots of this job."""
    return conn.execute(select(stage_lots.c.lot_id).where(
        stage_lots.c.stage == stage, stage_lots.c.job_id == job_id).limit(1)).first() is not None


def shard(conn: Connection, shard_id: str) -> Shard | None:
    """One shard, if it is on record."""
    r = conn.execute(_shards().where(stage_shards.c.shard_id == shard_id)).first()
    return None if r is None else _shard(r)


# When a shard's batch was made at OpenAI (its max-age cancel and OpenAI's expiry go by it); for a
# shard with none yet, or recorded before 0038, when its lots were claimed.
BATCH_MADE = func.coalesce(stage_shards.c.batch_created_at, stage_shards.c.created_at)


def _shards() -> Select[Any]:
    # The create's age by the database's clock, which stamped `create_asked_at`: a pod's clock
    # minutes ahead took a create that may still land for an old one.
    asked_age = func.extract("epoch", func.now() - stage_shards.c.create_asked_at)
    return select(stage_shards, asked_age.label("create_asked_age_s"))


def _shard(r: Any) -> Shard:
    age = r.create_asked_age_s
    return Shard(r.shard_id, r.job_id, r.client_id, r.attempt, r.status, r.batch_id, r.batch_status,
                 r.unreadable_reason, r.release, r.created_at.timestamp(),
                 None if age is None else float(age),
                 None if r.batch_created_at is None else r.batch_created_at.timestamp())


def claim_named(conn: Connection, stage: str, job_id: str, lot_ids: Sequence[str],
                shard_id: str, work_type: type[W]) -> list[LotWork[W]]:
    """Take these lots into a shard, those of them still waiting for one (others are left where
    they are); the job's queue is locked first, as a claim by place locks it."""
    rows = conn.execute(text(f"""
        WITH j AS (SELECT claimed_place FROM stage_jobs WHERE stage = :stage AND job_id = :job_id FOR UPDATE)
        UPDATE stage_lots AS l SET status = :submitted, shard_id = :shard_id, attempts = l.attempts + 1,
                                   updated_at = now()
          FROM j
         WHERE l.stage = :stage AND l.job_id = :job_id AND l.lot_id = ANY(CAST(:lot_ids AS text[]))
           AND {IN_QUEUE}
        RETURNING {_BY_NAME}"""),
        {"stage": stage, "job_id": job_id, "lot_ids": list(lot_ids), "submitted": SUBMITTED,
         "shard_id": shard_id, "waiting": WAITING})
    return [_lot(row, work_type) for row in rows]

