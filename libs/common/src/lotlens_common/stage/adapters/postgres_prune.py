"""Housekeeping of the stage's work tables: finished jobs' rows are forgotten after a while."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, text

from lotlens_common.stage.adapters.postgres import IN_QUEUE
from lotlens_common.tables import stage_jobs, stage_lots, stage_shards

# Jobs a transaction deletes: a 50,000-lot job's rows take seconds, and one statement for all of
# a round's jobs (up to 5 million rows) could outlast the workers' statement_timeout, roll back,
# and be tried again every round while the tables grew; one transaction for all of them held
# their locks that long, and one lock timeout undid every job's deletion.
JOBS_PER_DELETE = 10


def prune(engine: Engine, stage: str, settled_before: datetime, limit: int = 100) -> int:
    """Forget up to `limit` jobs whose every lot settled before `settled_before`; how many.

    With no shard of the job building or submitted, a lot still in a shard (`submitted`, or
    waiting at a claimed place) is in a collected one: settled. A shard's last change counts as
    its lots' (a claim does not write them). A job with no lots in the stage (cancelled before any
    reached it) settled when its row last changed.

    The read models keep the results; these rows only matter while a job is in flight, and
    without pruning every query of the stage would wade through all the jobs ever run.
    """
    finished = text(f"""
        SELECT j.job_id FROM stage_jobs j LEFT JOIN stage_lots l ON l.stage = j.stage AND l.job_id = j.job_id
         WHERE j.stage = :stage
           AND NOT EXISTS (SELECT 1 FROM stage_shards s WHERE s.stage = :stage AND s.job_id = j.job_id
                              AND (s.status IN ('building', 'submitted') OR s.updated_at >= :before))
         GROUP BY j.job_id, j.updated_at
        HAVING NOT coalesce(bool_or({IN_QUEUE}), false)
           AND coalesce(max(l.updated_at), j.updated_at) < :before
        LIMIT :limit""")
    with engine.begin() as conn:
        job_ids = list(conn.execute(finished, {"stage": stage, "before": settled_before, "limit": limit})
                       .scalars())
    # A finished job gets no new rows: deleted in transactions of their own, a few jobs each.
    for start in range(0, len(job_ids), JOBS_PER_DELETE):
        some = job_ids[start:start + JOBS_PER_DELETE]
        with engine.begin() as conn:
            for table in (stage_lots, stage_shards, stage_jobs):
                conn.execute(table.delete().where(table.c.stage == stage, table.c.job_id.in_(some)))
    return len(job_ids)
