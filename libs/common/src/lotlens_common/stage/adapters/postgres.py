"""The work store on PostgreSQL: stage_lots, stage_shards, stage_jobs; every state change is here.

Functions take a connection (the intake handlers call them inside their consumer transaction);
`PostgresWorkStore` is the runner's port over them, one transaction per call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Text, any_, bindparam, cast, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, insert

from lotlens_common.stage.core.rule import WaitingJob
from lotlens_common.stage.ports import Shard
from lotlens_common.stage.work import LotWork, StageWork
from lotlens_common.tables import stage_jobs, stage_lots, stage_shards

W = TypeVar("W", bound=StageWork)

# stage_lots.status values. A lot left `submitted` in a shard closed `collected` is done: the
# lots that succeed are not written one by one (`lot_statuses`).
WAITING, SUBMITTED, DONE, FAILED, CANCELLED, SKIPPED = (
    "waiting", "submitted", "done", "failed", "cancelled", "skipped")



def enqueue(conn: Connection, stage: str, lots: Sequence[LotWork[Any]], status: str = WAITING) -> None:
    """Add arriving lots and count them on their job; a lot already known (re-delivered event) is
    left as it is and not counted again."""
    if not lots:
        return
    # One statement over arrays: half the time of SQLAlchemy's multi-row VALUES, whose SQL text
    # (every work document inlined) the driver builds and the server parses once per 1,000 rows.
    # The jobs' rows are written in job order, so two intake transactions never deadlock on them.
    conn.execute(text("""
        WITH arrived AS (
            INSERT INTO stage_lots (stage, job_id, lot_id, client_id, total_lots, work, status)
            SELECT :stage, v.job_id, v.lot_id, v.client_id, v.total_lots, CAST(v.work AS jsonb), :status
              FROM unnest(CAST(:job_ids AS text[]), CAST(:lot_ids AS text[]), CAST(:client_ids AS text[]),
                          CAST(:totals AS int[]), CAST(:works AS text[]))
                   AS v(job_id, lot_id, client_id, total_lots, work)
            ON CONFLICT DO NOTHING
            RETURNING job_id)
        INSERT INTO stage_jobs AS j (stage, job_id, arrived)
        SELECT :stage, job_id, count(*) FROM arrived GROUP BY job_id ORDER BY job_id
        ON CONFLICT (stage, job_id) DO UPDATE SET arrived = j.arrived + EXCLUDED.arrived,
                                                  updated_at = now()"""),
        {"stage": stage, "status": status, "job_ids": [lot.job_id for lot in lots],
         "lot_ids": [lot.lot_id for lot in lots], "client_ids": [lot.client_id for lot in lots],
         "totals": [lot.total_lots for lot in lots],
         "works": [lot.work.model_dump_json() for lot in lots]})


def cancel_job(conn: Connection, stage: str, job_id: str) -> None:
    """Remember the cancellation; lots not yet sent will never be."""
    conn.execute(insert(stage_jobs).values(stage=stage, job_id=job_id, cancelled=True)
                 .on_conflict_do_update(index_elements=["stage", "job_id"], set_={"cancelled": True}))
    conn.execute(update(stage_lots)
                 .where(stage_lots.c.stage == stage, stage_lots.c.job_id == job_id,
                        stage_lots.c.status == WAITING)
                 .values(status=CANCELLED, updated_at=func.now()))


def cancelled_jobs(conn: Connection, stage: str, job_ids: Iterable[str]) -> set[str]:
    """Which of these jobs were cancelled."""
    rows = conn.execute(select(stage_jobs.c.job_id).where(
        stage_jobs.c.stage == stage, stage_jobs.c.job_id.in_(list(job_ids)), stage_jobs.c.cancelled))
    return {row.job_id for row in rows}


def waiting_jobs(conn: Connection, stage: str) -> list[WaitingJob]:
    """Jobs with waiting lots, with what the batching rule needs to know about them.

    Only waiting lots are read; how many of the job's lots arrived comes from its counter
    (`enqueue`): counting every lot of a 50,000-lot job five times a second was most of what
    the stage asked of the database between batches.
    """
    rows = conn.execute(text("""
        SELECT w.job_id, w.waiting, coalesce(j.arrived, 0) AS arrived, w.expected, w.oldest
          FROM (SELECT job_id, count(*) AS waiting, max(total_lots) AS expected,
                       min(enqueued_at) AS oldest
                  FROM stage_lots
                 WHERE stage = :stage AND status = 'waiting'
                 GROUP BY job_id) AS w
          LEFT JOIN stage_jobs j ON j.stage = :stage AND j.job_id = w.job_id"""), {"stage": stage})
    return [WaitingJob(row.job_id, row.waiting, row.arrived, row.expected, row.oldest, 0)
            for row in rows]


def tokens_enqueued(conn: Connection, stage: str) -> int:
    """Estimated tokens of this stage's batches that OpenAI still holds."""
    total = conn.execute(select(func.coalesce(func.sum(stage_shards.c.estimated_tokens), 0)).where(
        stage_shards.c.stage == stage, stage_shards.c.status.in_(["building", "submitted"])))
    return int(total.scalar_one())


def _lot(row: Any, work_type: type[W]) -> LotWork[W]:
    # The work comes as JSON text: pydantic parses it faster than psycopg2 builds a dict from
    # jsonb and pydantic then validates the dict (about 3x on a 50,000-lot claim).
    return LotWork(row.job_id, row.lot_id, row.client_id, row.total_lots, row.attempts,
                   work_type.model_validate_json(row.work))


# The columns a LotWork is made of, the work as text.
_LOT_COLUMNS = (stage_lots.c.job_id, stage_lots.c.lot_id, stage_lots.c.client_id, stage_lots.c.total_lots,
                stage_lots.c.attempts, cast(stage_lots.c.work, Text).label("work"))


def claim(conn: Connection, stage: str, job_id: str, limit: int, shard_id: str,
          work_type: type[W]) -> list[LotWork[W]]:
    """Take up to `limit` waiting lots of a job into a shard (skipping lots another instance holds)."""
    # The picked rows are updated by their physical address (a TID scan): joining them back by
    # key left the plan to the table's statistics, and while a new deployment's table grows
    # from empty those are stale; a nested loop over sequential scans took 21-53 s to claim
    # 10,000 lots of a 20,000-lot job.
    rows = conn.execute(text("""
        UPDATE stage_lots SET status = :submitted, shard_id = :shard_id, attempts = attempts + 1,
                              updated_at = now()
         WHERE ctid = ANY(ARRAY(
               SELECT ctid FROM stage_lots
                WHERE stage = :stage AND job_id = :job_id AND status = :waiting
                ORDER BY enqueued_at, lot_id
                LIMIT :limit
                  FOR UPDATE SKIP LOCKED))
           AND status = :waiting
        RETURNING job_id, lot_id, client_id, total_lots, attempts, work::text AS work"""),
        {"submitted": SUBMITTED, "waiting": WAITING, "shard_id": shard_id,
                          "stage": stage, "job_id": job_id, "limit": limit})
    return [_lot(row, work_type) for row in rows]


def create_shard(conn: Connection, stage: str, shard_id: str, lots: Sequence[LotWork[Any]],
                 estimated_tokens: int) -> None:
    """Record a shard before its batch exists, so a crash leaves a trace to recover from."""
    conn.execute(stage_shards.insert().values(
        shard_id=shard_id, stage=stage, job_id=lots[0].job_id, client_id=lots[0].client_id,
        attempt=max(lot.attempts for lot in lots), lot_count=len(lots),
        estimated_tokens=estimated_tokens))


def save_work(conn: Connection, stage: str, lots: Sequence[LotWork[Any]]) -> None:
    """Persist what preparation learnt about one job's lots (e.g. which images are reachable).

    One statement for the whole chunk: an executemany is one round trip per lot.
    """
    if not lots:
        return
    conn.execute(text("""
        UPDATE stage_lots AS s SET work = CAST(v.work AS jsonb)
          FROM unnest(CAST(:lot_ids AS text[]), CAST(:works AS text[])) AS v(lot_id, work)
         WHERE s.stage = :stage AND s.job_id = :job_id AND s.lot_id = v.lot_id"""),
        {"stage": stage, "job_id": lots[0].job_id, "lot_ids": [lot.lot_id for lot in lots],
         "works": [lot.work.model_dump_json() for lot in lots]})


def set_status(conn: Connection, stage: str, job_id: str, lot_ids: Sequence[str], status: str,
               error: str | None = None) -> None:
    """Move lots to a new status; back to waiting also frees them from their shard."""
    if not lot_ids:
        return
    values: dict[str, Any] = {"status": status, "updated_at": func.now(), "last_error": error}
    if status == WAITING:
        values.update(shard_id=None, enqueued_at=func.now())
    conn.execute(update(stage_lots)
                 .where(stage_lots.c.stage == stage, stage_lots.c.job_id == job_id,
                        stage_lots.c.lot_id == any_(_text_array(lot_ids)))
                 .values(**values))


def _text_array(values: Sequence[str]) -> Any:
    """One array parameter: an IN list of 1,000 ids is 1,000 parameters for the driver to quote
    and the server to parse (the larger part of settling a chunk of lots)."""
    return bindparam(None, list(values), type_=ARRAY(Text))


def record_batch(conn: Connection, shard_id: str, batch_id: str, lot_count: int) -> None:
    """The shard's batch exists and is on record."""
    conn.execute(update(stage_shards).where(stage_shards.c.shard_id == shard_id).values(
        batch_id=batch_id, status="submitted", lot_count=lot_count, updated_at=func.now()))


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
    rows = conn.execute(select(stage_shards).where(
        stage_shards.c.stage == stage, stage_shards.c.status == status)
        .order_by(stage_shards.c.created_at))
    return [Shard(r.shard_id, r.job_id, r.client_id, r.attempt, r.status, r.batch_id, r.batch_status)
            for r in rows]


def shard_status(conn: Connection, shard_id: str) -> str | None:
    """A shard's status now (another instance may have moved it since it was listed)."""
    return conn.execute(select(stage_shards.c.status).where(
        stage_shards.c.shard_id == shard_id)).scalar_one_or_none()


def shard_lots(conn: Connection, stage: str, shard_id: str, work_type: type[W]) -> list[LotWork[W]]:
    """The lots a shard still holds."""
    rows = conn.execute(select(*_LOT_COLUMNS).where(
        stage_lots.c.stage == stage, stage_lots.c.shard_id == shard_id,
        stage_lots.c.status == SUBMITTED))
    return [_lot(row, work_type) for row in rows]


def lot_statuses(conn: Connection, stage: str, job_id: str) -> dict[str, str]:
    """Each lot of the job and its status, a lot of a collected shard reading `done`."""
    rows = conn.execute(text("""
        SELECT l.lot_id, CASE WHEN l.status = :submitted AND s.status = 'collected' THEN :done
                              ELSE l.status END AS status
          FROM stage_lots l LEFT JOIN stage_shards s ON s.shard_id = l.shard_id
         WHERE l.stage = :stage AND l.job_id = :job_id"""),
        {"submitted": SUBMITTED, "done": DONE, "stage": stage, "job_id": job_id})
    return {row.lot_id: row.status for row in rows}


def shard_trace(conn: Connection, stage: str, shard_id: str) -> dict[str, str]:
    """The trace context in one lot's work of the shard (all of a shard's lots are of one job)."""
    carrier = conn.execute(select(stage_lots.c.work["trace"]).where(
        stage_lots.c.stage == stage, stage_lots.c.shard_id == shard_id).limit(1)).scalar_one_or_none()
    return dict(carrier) if isinstance(carrier, dict) else {}


@contextmanager
def exclusive(engine: Engine, key: str, held: dict[str, Connection] | None = None) -> Iterator[bool]:
    """Hold a session advisory lock on `key` while inside; yields False if another process has it.

    The lock dies with the connection, so a killed process never leaves a shard locked; the
    connection is put in `held` meanwhile, for `still_held`.
    """
    with engine.connect() as conn:
        got = bool(conn.execute(select(func.pg_try_advisory_lock(func.hashtext(key)))).scalar())
        conn.commit()
        if got and held is not None:
            held[key] = conn
        try:
            yield got
        finally:
            if held is not None:
                held.pop(key, None)
            if got:
                conn.execute(select(func.pg_advisory_unlock(func.hashtext(key))))
                conn.commit()


def still_held(conn: Connection) -> bool:
    """Whether the lock's session is alive: a PostgreSQL restart ends it (and frees the lock for
    another process) while its holder works on."""
    try:
        conn.execute(select(1))
        conn.commit()
        return True
    except Exception:  # any failure means the session, and the lock with it, may be gone
        return False


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
    r = conn.execute(select(stage_shards).where(stage_shards.c.shard_id == shard_id)).first()
    return None if r is None else Shard(r.shard_id, r.job_id, r.client_id, r.attempt, r.status,
                                        r.batch_id, r.batch_status)


def claim_named(conn: Connection, stage: str, job_id: str, lot_ids: Sequence[str],
                shard_id: str, work_type: type[W]) -> list[LotWork[W]]:
    """Take these lots into a shard, those of them still waiting (others are left where they are)."""
    rows = conn.execute(
        update(stage_lots)
        .where(stage_lots.c.stage == stage, stage_lots.c.job_id == job_id,
               stage_lots.c.lot_id.in_(list(lot_ids)), stage_lots.c.status == WAITING)
        .values(status=SUBMITTED, shard_id=shard_id, attempts=stage_lots.c.attempts + 1,
                updated_at=func.now())
        .returning(*_LOT_COLUMNS))
    return [_lot(row, work_type) for row in rows]


def prune(conn: Connection, stage: str, settled_before: datetime, limit: int = 100) -> int:
    """Forget up to `limit` jobs whose every lot settled before `settled_before`; how many.

    With no shard of the job building or submitted, a lot still `submitted` is in a collected
    shard: settled.

    The read models keep the results; these rows only matter while a job is in flight, and
    without pruning every query of the stage would wade through all the jobs ever run.
    """
    finished = text("""
        SELECT job_id FROM stage_lots l
         WHERE stage = :stage
           AND NOT EXISTS (SELECT 1 FROM stage_shards s WHERE s.stage = :stage AND s.job_id = l.job_id
                              AND s.status IN ('building', 'submitted'))
         GROUP BY job_id
        HAVING bool_and(status <> 'waiting') AND max(updated_at) < :before
        LIMIT :limit""")
    job_ids = list(conn.execute(finished, {"stage": stage, "before": settled_before, "limit": limit})
                   .scalars())
    if job_ids:
        for table in (stage_lots, stage_shards, stage_jobs):
            conn.execute(table.delete().where(table.c.stage == stage, table.c.job_id.in_(job_ids)))
    return len(job_ids)


def unclaim(conn: Connection, stage: str, job_id: str, lot_ids: Sequence[str]) -> None:
    """Give claimed lots back, in their place in the queue and with the attempt not counted."""
    if lot_ids:
        conn.execute(update(stage_lots)
                     .where(stage_lots.c.stage == stage, stage_lots.c.job_id == job_id,
                            stage_lots.c.lot_id == any_(_text_array(lot_ids)))
                     .values(status=WAITING, shard_id=None, attempts=stage_lots.c.attempts - 1))
