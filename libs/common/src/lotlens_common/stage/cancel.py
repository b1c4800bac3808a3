"""A cancelled job's lots that the stage still holds: dropped through the settler, never sent.

The intake's cancel (`postgres.cancel_job`) drops the job's queued lots in one statement, with no
event, but for those billed for earlier answers (`earlier_usage`: a part of their languages, an
answer they could not use): those, and any lot a settlement sends back to a cancelled job's queue
(whose work may learn it was billed only in that settlement), wait for the runner. It drops them
here, as a shard claimed just before the cancel is: through the settler, whose LotFailed carries
what each was billed. Dropped with no event, the job's usage left out what OpenAI billed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg2
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimedOut

from lotlens_common.stage import metrics
from lotlens_common.stage.core.rule import WaitingJob
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.settle import Settler
from lotlens_common.stage.work import LotWork

log = logging.getLogger(__name__)


def database_down(exc: BaseException) -> bool:
    """Whether the database itself is out of reach (no job's drop can go on, so the round ends
    once: each job tried and logged on its own wrote one traceback per cancelled job at every tick
    of an outage). Not a statement the server ended (a statement or lock timeout, a deadlock: a
    subclass of psycopg2's OperationalError), which is that job's alone: raised, it stopped every
    other job's batches."""
    if isinstance(exc, InterfaceError | PoolTimedOut):
        return True
    return isinstance(exc, OperationalError) and type(exc.orig) is psycopg2.OperationalError


def drop_cancelled(stage: Stage[Any], jobs: Sequence[WaitingJob]) -> list[WaitingJob]:
    """Drop the waiting lots of the cancelled jobs among `jobs` (a shard's worth each); the others.

    Not held by a pause: no batch is made, and the cancelled job's usage waits for their events.
    """
    for job in jobs:
        if not job.cancelled:
            continue
        shard_id = f"{stage.spec.name}-{uuid.uuid4().hex}"
        try:
            with stage.store.exclusive(shard_id):
                # A shard like any other (two instances never claim the same lot), so a failure or
                # a crash before it is closed leaves it `building`, and recovery drops its lots as
                # `job_cancelled` does.
                if stage.store.claim(job.job_id, shard_id, stage.settings.max_requests_per_batch, _all):
                    job_cancelled(stage, shard_id, job.job_id)
        except Exception as exc:
            if database_down(exc):
                raise
            # One job's failure (Kafka refusing its LotFailed, say) raised from here ended every
            # round before any other job's batch was sent or collected, on every instance.
            metrics.openai_error(stage.spec.name, "cancel", exc)
            log.exception("dropping the waiting lots of cancelled job %s failed; the next round "
                          "tries again", job.job_id, extra={"job_id": job.job_id, "shard_id": shard_id})
    return [job for job in jobs if not job.cancelled]


def _all(lots: list[LotWork[Any]]) -> tuple[int, int]:
    return len(lots), 0  # no batch is made: nothing is enqueued at OpenAI


def job_cancelled(stage: Stage[Any], shard_id: str, job_id: str) -> bool:
    """Whether the shard's job was cancelled; if so its lots are, and the shard is closed empty."""
    shard = stage.store.shard(shard_id) if stage.store.cancelled_jobs([job_id]) else None
    if shard is None:
        return False
    # Through the settler, as a collection cancels them: a lot billed for earlier answers (a part
    # of its languages, an answer it could not use) reports them in its LotFailed. Marked
    # cancelled here directly, it was dropped with no event, and its job's usage left them out.
    settler = Settler(stage, shard, cancelled=True)
    held = stage.store.shard_lots(shard_id)
    for lot in held:
        settler.cancel(lot, "before its batch was made")
    settler.flush()
    stage.store.close_shard(shard_id, "empty", None)
    log.info("shard %s of job %s: its job was cancelled, no batch is made for its %d lots", shard_id,
             job_id, len(held), extra={"job_id": job_id, "shard_id": shard_id})
    return True
