"""Deciding that a job is finished, and telling the world with `JobCompleted`.

Two steps with a commit in between. `settle_jobs` runs inside the batch's transaction: a job
whose every lot is completed or failed gets its terminal status there, atomically with the
counters that finished it. `publish_completions` runs after the commit: it publishes
`JobCompleted` for terminal jobs not yet announced, waits for Kafka's acknowledgement, and only
then sets `completion_published`. A crash in between announces a job twice, under one event id
(the dispatcher dedupes, and so can a subscriber), never zero times; the startup sweep covers a
crash right after the commit, and the sweep after a rebuild's swap the jobs it finished (`sweeps`).
Whatever the announcement says is committed before it goes out (the usage is summed from the
job's lots in a transaction of its own first; a cancelled job's at every attempt): read models a
dispatcher reads on `JobCompleted` never lack what the event carries.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from datetime import datetime
from functools import partial
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    Select,
    and_,
    bindparam,
    case,
    exists,
    func,
    or_,
    select,
    text,
    update,
)

from lotlens_common.clock import utc_now
from lotlens_common.db import job_lock
from lotlens_common.envelope import Envelope, caused
from lotlens_common.events import TERMINAL_JOB_STATUSES, JobCancelled, JobCompleted
from lotlens_common.model.usage import JobUsage
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.tables import READ_MODELS, jobs, lots, outbox
from lotlens_result_store.changes import JobChanges
from lotlens_result_store.metrics import BATCH_JOBS, execute
from lotlens_result_store.status import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PROCESSING,
    TRANSLATING,
    JobProgress,
    settle,
)
from lotlens_result_store.usage import count_usage, job_usage

log = logging.getLogger(__name__)


_LOCK_READ_MODELS = text(f"LOCK TABLE {', '.join(t.name for t in READ_MODELS)} IN ROW EXCLUSIVE MODE")


# One transaction at a time writes a job's rows. KEDA scales the result-store, and a job's vision and
# translation partitions may belong to two replicas: a lot's completion inserting its row while
# the other replica's vision statement ran found no row to read and waited on the new one, and the
# job never counted the lot's images. Taken in job order (no deadlock); one statement per batch.
_LOCK_JOBS = text(f"""
SELECT count({job_lock('ordered.job_id')})
FROM (SELECT job_id FROM unnest(CAST(:job_ids AS text[])) AS job_id ORDER BY job_id) AS ordered""")


def lock_jobs(conn: Connection, job_ids: Collection[str]) -> None:
    """Wait until no other transaction writes these jobs' rows; hold them until commit."""
    execute(conn, "lock_jobs", _LOCK_JOBS, {"job_ids": sorted(set(job_ids))})


def lock_read_models(conn: Connection) -> None:
    """Take the write lock every writer of the read models takes first (it never blocks another
    writer). A rebuild's swap holds a stronger one: this waits for the swap, then resolves the
    table names again, so every later statement of the transaction sees the swapped-in tables."""
    execute(conn, "lock_read_models", _LOCK_READ_MODELS)


# Both locks in one round trip: PostgreSQL runs the two statements one after the other, each
# resolving its names when its turn comes, so the second (and every later one) sees the tables a
# swap the first waited for brought in. A 50,000-lot job is about 305 batches.
_LOCK_BATCH = text(f"{_LOCK_READ_MODELS.text}; {_LOCK_JOBS.text}")


def lock_batch(conn: Connection, job_ids: Collection[str]) -> None:
    """`lock_read_models`, then `lock_jobs`, in one statement sent."""
    execute(conn, "lock_batch", _LOCK_BATCH, {"job_ids": sorted(set(job_ids))})


# A terminal job whose JobCompleted Kafka has not acknowledged yet.
_UNANNOUNCED = (jobs.c.status.in_(sorted(TERMINAL_JOB_STATUSES)), jobs.c.completion_published.is_(False))


# Built once: built at every batch, with the one below (`refresh_cancelled_usage`), they were
# 0.5 ms of the result-store's CPU a batch, 0.15-0.25 CPU-s of a 50,000-lot job.
_TOUCHED = jobs.c.job_id.in_(bindparam("job_ids", expanding=True))
_SETTLEABLE = (jobs.c.status.not_in(sorted(TERMINAL_JOB_STATUSES)), jobs.c.total_lots.is_not(None),
               jobs.c.processed_lots + jobs.c.failed_lots >= jobs.c.total_lots)
# The client got 200 and the contract's promise that the job reads `cancelled` from then on; that
# JobCancelled ends the job when it arrives. Settled by its last lot meanwhile, the job read
# `completed` after the 200 and its webhook said so. The gateway takes `lock_jobs`' lock to accept
# a cancel, so one committed before this batch's lock is seen here, and a job settled here is
# refused a cancel (400). Cancels are the gateway's outbox rows, kept until this job's row is
# terminal (`ix_outbox_job_events`).
_NO_ACCEPTED_CANCEL = ~exists().where(outbox.c.job_id == jobs.c.job_id,
                                      outbox.c.event_type == JobCancelled.event_type)
# Of the touched jobs, those to settle or announce; with accepted cancels (True) or not.
# Both in job order, as every other statement here takes its jobs: unordered, the heap's order
# (which a rolled-back write moves) decided the order of the jobs counted, summed and updated.
_SETTLE_CANDIDATES = {heeded: select(
    jobs.c.job_id, jobs.c.status, jobs.c.total_lots, jobs.c.processed_lots, jobs.c.failed_lots,
).where(_TOUCHED, or_(and_(*_UNANNOUNCED), and_(*_SETTLEABLE, *([_NO_ACCEPTED_CANCEL] if heeded else []))))
    .order_by(jobs.c.job_id) for heeded in (False, True)}
_ANNOUNCED_CANCELLED = select(jobs.c.job_id).where(
    _TOUCHED, jobs.c.status == CANCELLED, jobs.c.completion_published.is_(True)).order_by(jobs.c.job_id)


def settle_jobs(conn: Connection, changes: JobChanges, accepted_cancels: bool = False) -> list[str]:
    """Give a terminal status to every touched job whose lots are all accounted for; with
    `accepted_cancels` (live, not in a rebuild: it sees no outbox, and its swap undoes such
    settlements, `unsettle_cancelled`), not to a job whose cancel the gateway has accepted and
    this store not projected yet. Returns the touched jobs to announce: terminal and unannounced,
    settled here or before (cancelled, or a batch retried after its announcement failed)."""
    if not changes:
        return []
    # The batch's job upsert already holds these rows' locks, so the counters read are final. The
    # same statement finds the jobs to announce: the batch's own transaction decides whether any
    # is, and a batch that finishes none (nearly all of them) runs no announcement's transactions.
    rows = execute(conn, "select_jobs", _SETTLE_CANDIDATES[accepted_cancels],
                   {"job_ids": sorted(changes.job_ids())}).all()
    unannounced = [str(row[0]) for row in rows if row[1] in TERMINAL_JOB_STATUSES]
    candidates = [(job_id, total, processed, failed) for job_id, status, total, processed, failed in rows
                  if status not in TERMINAL_JOB_STATUSES]
    if not candidates:
        return unannounced
    lot_counts = _lot_counts(conn, [row[0] for row in candidates])
    settled: list[dict[str, object]] = []
    for job_id, total_lots, processed_lots, failed_lots in candidates:
        submitted, undescribed, last_settled_at = lot_counts.get(job_id, (0, 0, None))
        outcome = settle(JobProgress(total_lots, processed_lots, failed_lots, submitted, undescribed))
        if outcome is None:
            continue
        # Event time, not wall time, so a rebuild from the topics gives the same answer.
        settled.append({"id": job_id, "status": outcome.status, "error": outcome.error_message,
                        "at": last_settled_at or utc_now()})
    if settled:
        # The usage is final with the status: a poll that sees the job finished sees its cost.
        usages = job_usage(conn, [str(row["id"]) for row in settled])
        for row in settled:
            row["usage"] = _usage_json(usages.get(str(row["id"])))
        execute(conn, "settle_jobs", update(jobs).where(jobs.c.job_id == bindparam("id")).values(
            status=bindparam("status"), error_message=bindparam("error"),
            completed_at=bindparam("at"), usage=bindparam("usage"), updated_at=utc_now()), settled)
        log.info("settled %d jobs", len(settled))
    return sorted([*unannounced, *(str(row["id"]) for row in settled)])


def unsettle_cancelled(conn: Connection, retired_schema: str) -> list[str]:
    """Undo the settlement of every unannounced job whose cancel the gateway has accepted and
    the live store not projected yet, as the live `settle_jobs` never made it; returns their ids.

    For a rebuild's swap, in its transaction once the rebuilt tables have the live names and the
    live ones are in `retired_schema`: their replay sees no outbox, so it settled a job whose last
    lot landed before its `JobCancelled`, and the swap watch then announced it `completed` (its
    webhook too) after the client's 200. Asked after the tables moved, so a cancel the gateway
    accepted against the old `jobs` row has committed (the move waited for its read), and a later
    one reads the rebuilt row. The job is left running with its counters full (the gateway reads
    it `cancelled` meanwhile, `overlay`); its `JobCancelled` ends it `cancelled`, as live.

    A job the live store already ended (its `JobCancelled` projected and consumed, the outbox row
    not pruned yet, the announcement not made: it waited on the swap's lock, or Kafka) takes the
    live row's ending instead: left running, it waited for a cancel the live store never reads
    again, and its announcement, reading the swapped-in row, announced nothing.
    """
    # Aliased: both tables are named `jobs`, and PostgreSQL refuses a name twice in one UPDATE.
    retired = jobs.to_metadata(MetaData(), schema=retired_schema).alias("live_jobs")
    settled_by_replay = (jobs.c.status.in_([COMPLETED, FAILED]), jobs.c.completion_published.is_(False),
                         exists().where(outbox.c.job_id == jobs.c.job_id,
                                        outbox.c.event_type == JobCancelled.event_type))
    ended_live = (retired.c.job_id == jobs.c.job_id, retired.c.status.in_(sorted(TERMINAL_JOB_STATUSES)))
    conn.execute(update(jobs).where(*settled_by_replay, *ended_live).values(
        status=retired.c.status, error_message=retired.c.error_message,
        completed_at=retired.c.completed_at, cancelled_at=retired.c.cancelled_at, usage=retired.c.usage,
        completion_published=retired.c.completion_published, updated_at=utc_now()))
    return [str(job_id) for job_id in conn.execute(
        update(jobs).where(*settled_by_replay, ~exists().where(*ended_live))
        # The status before the settlement: a job with a described lot had its translation batch.
        .values(status=case((jobs.c.processed_lots > 0, TRANSLATING), else_=PROCESSING),
                error_message=None, completed_at=None, usage=None, updated_at=utc_now())
        .returning(jobs.c.job_id)).scalars()]


# A result-store of the release before `awaiting_vision` (a rolling upgrade, a rollback) projects
# a vision result without clearing the flag: the usage that result brought says it came, or the
# job waited for it for good. (Such a release projecting a result without usage still leaves the
# flag, and its job unsettled: docs/RUNBOOK.md, "A job that does not finish".)
_WITHOUT_VISION_USAGE = func.coalesce(~lots.c.usage.has_key("vision"), True)


def _lot_counts(conn: Connection, job_ids: list[str]) -> dict[str, tuple[int, int, datetime | None]]:
    """Per job: lots with their LotSubmitted projected (it sets `seq`); settled lots still
    without their VisionCompleted (completed ones have no processed image yet, since a described
    lot has one and a lot whose images all failed is failed, never completed; failed ones at
    translation are `awaiting_vision`); and when the last lot settled."""
    rows = execute(conn, "count_lots", select(
        lots.c.job_id,
        func.count().filter(lots.c.seq.is_not(None)),
        func.count().filter(or_(and_(lots.c.status == COMPLETED, lots.c.processed_images == 0),
                                and_(lots.c.awaiting_vision, _WITHOUT_VISION_USAGE))),
        func.max(lots.c.processed_at),
    ).where(lots.c.job_id.in_(job_ids)).group_by(lots.c.job_id)).all()
    return {job_id: (int(submitted), int(undescribed), settled_at)
            for job_id, submitted, undescribed, settled_at in rows}


def unannounced_jobs(engine: Engine) -> list[str]:
    """Every terminal job not announced yet, in job order."""
    with engine.connect() as conn:
        return [str(job_id) for job_id in conn.execute(
            select(jobs.c.job_id).where(*_UNANNOUNCED).order_by(jobs.c.job_id)).scalars()]


def publish_completions(engine: Engine, producer: EventProducer, topic: str,
                        job_ids: Collection[str] | None = None) -> int:
    """Announce terminal jobs not yet announced (only `job_ids`, or all); returns how many."""
    if job_ids is not None and not job_ids:
        return 0
    query = select(jobs).where(*_UNANNOUNCED)
    if job_ids is not None:
        query = query.where(jobs.c.job_id.in_(sorted(job_ids)))
    _sum_usage(engine, query)
    held = _held_by(producer)
    with engine.begin() as conn:
        lock_read_models(conn)
        # Row locks keep two instances that touched the same job from both announcing it.
        rows = execute(conn, "select_jobs", query.order_by(jobs.c.job_id).with_for_update()
                       ).mappings().all()
        # Held copies of jobs no longer unannounced: another producer (the swap watch's, another
        # replica's) marked them. Their copies still land, under the same event id.
        asked = held.sent if job_ids is None else held.sent & set(job_ids)
        held.forget(asked - {row["job_id"] for row in rows})
        if not rows:
            return 0
        usages = {row["job_id"]: JobUsage.model_validate(row["usage"]) for row in rows if row["usage"]}
        for row in rows:
            if row["job_id"] in held.sent:
                continue  # a copy an earlier round sent is on its way (or there): not sent again
            event = JobCompleted(
                job_id=row["job_id"], status=row["status"],
                completed_at=_finished_at(row["completed_at"], row["cancelled_at"], row["updated_at"]),
                total_lots=row["total_lots"] or 0, processed_lots=row["processed_lots"],
                failed_lots=row["failed_lots"], usage=usages.get(row["job_id"]))
            # A job ends once: its end is the cause.
            held.send(producer, topic, caused(event, row["client_id"] or "", row["status"]))
        # Every copy, earlier rounds' too, has its report. The transaction idles meanwhile, its
        # rows locked: the idle-transaction timeout outlasts this wait (the flush's own, 30 s:
        # KAFKA_WAIT_IN_TRANSACTION_S, `check_idle_timeout`), and a session ended in it (its process
        # gone silent) costs a retry, the copies held here.
        producer.flush()
        # Only the acknowledged: a copy an earlier round's failed flush purged may be reported only
        # by this flush (the purge does not wait), which then found nothing queued and returned
        # with that job's copy nowhere. Marked, the job was never announced, its webhooks never sent.
        announced = [row for row in rows if row["job_id"] in held.acknowledged]
        if announced:
            execute(conn, "mark_published", update(jobs).where(jobs.c.job_id == bindparam("id")).values(
                completion_published=True), [{"id": row["job_id"]} for row in announced])
    held.forget(row["job_id"] for row in announced)
    for row in announced:
        BATCH_JOBS.labels(status=row["status"]).inc()
        if row["job_id"] in usages:
            count_usage(usages[row["job_id"]])
        log.info("job %s %s", row["job_id"], row["status"], extra={"job_id": row["job_id"]})
    if len(announced) < len(rows):
        # Their copies are no longer held: the caller's retry sends them again.
        raise PublishError(f"{len(rows) - len(announced)} JobCompleted copies an earlier round sent "
                           "were dropped unacknowledged; publish again")
    return len(announced)


class _Held:
    """The JobCompleted copies one librdkafka producer holds, by job: sent without a report yet,
    or acknowledged after the round that sent them had stopped waiting.

    A round that gives up waiting (`flush` times out in a broker outage) leaves the copies already
    in flight with librdkafka, which delivers them once the broker is back. Sent again by the next
    round, a job was announced twice (the 40-second outage test found one); kept here, the next
    round waits for that copy instead, and marks the job once it is acknowledged. A copy that
    failed or was purged is dropped from here and sent again. Another producer (the swap watch's,
    a replica that took the partition) does not know of the copy and may announce the job too:
    that second copy has the same event id, which the dispatcher and subscribers dedupe by."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.sent: set[str] = set()
        self.acknowledged: set[str] = set()

    def send(self, producer: EventProducer, topic: str, envelope: Envelope) -> None:
        job_id = envelope.job_id
        self.sent.add(job_id)
        try:
            producer.publish(topic, envelope, partial(self.acknowledged.add, job_id),
                             partial(self._failed, job_id))
        except Exception:
            self.sent.discard(job_id)
            raise

    def _failed(self, job_id: str, _purged: bool) -> None:
        self.sent.discard(job_id)

    def forget(self, job_ids: Iterable[str]) -> None:
        """The jobs are marked announced: their copies are nobody's business any more."""
        for job_id in list(job_ids):
            self.sent.discard(job_id)
            self.acknowledged.discard(job_id)


# Per producer: a librdkafka producer's in-flight copies are its own (one producer a thread).
_HELD: WeakKeyDictionary[EventProducer, _Held] = WeakKeyDictionary()


def _held_by(producer: EventProducer) -> _Held:
    """The copies `producer` holds now. A renewal drops its librdkafka producer with every copy
    and report it held (the gateway's relay forgets its rows so too): kept, those jobs were never
    sent again, and never acknowledged."""
    held = _HELD.get(producer)
    if held is None or held.generation != producer.generation:
        held = _HELD[producer] = _Held(producer.generation)
    return held


def _sum_usage(engine: Engine, unannounced: Select[Any]) -> None:
    """Sum the usage of the unannounced terminal jobs from their lots as they are now, committed
    before their announcement: summed in the transaction that marks them announced, it was read
    only after Kafka had acknowledged `JobCompleted`, and a dispatcher reading the job meanwhile
    sent (and cached) it without.

    A cancelled job's is summed again at every attempt: its lots already in OpenAI's batches still
    get their answers, paid, after the cancel. Summed once, a first attempt that Kafka did not
    acknowledge froze the usage, and the retry announced less than the job's lots in the read models
    said. A settled job's usage is its settlement's: its lots had all ended, and it is not summed
    again (a 50,000-lot job's sum is 75-425 ms, on the way to every big job's announcement)."""
    with engine.begin() as conn:
        lock_read_models(conn)
        job_ids = execute(conn, "select_unsummed", unannounced.with_only_columns(jobs.c.job_id)
                          .where(or_(jobs.c.usage.is_(None), jobs.c.status == CANCELLED))
                          .order_by(jobs.c.job_id).with_for_update()).scalars().all()
        usages = job_usage(conn, list(job_ids)) if job_ids else {}
        if usages:
            execute(conn, "sum_usage", update(jobs).where(jobs.c.job_id == bindparam("id")).values(
                usage=bindparam("usage")),
                [{"id": job_id, "usage": _usage_json(usage)} for job_id, usage in usages.items()])


def refresh_cancelled_usage(conn: Connection, job_ids: Collection[str]) -> None:
    """Sum again the usage of these jobs that were cancelled and announced: their lots already in
    OpenAI's batches still get their answers, paid, after the announcement. `JobCompleted` and its
    webhooks have gone out with the usage of that moment; `batch-status` and `batch-results` read
    this one. Left as announced, they showed less than the job's lots (and OpenAI's bill).

    Summed whole at each batch that touches the job: 220-330 ms a batch for 50,000 lots (measured
    on 2 busy cores, a third of it JIT), so 11-33 s over the 50-100 batches of a large cancelled
    job's late answers. Added lot by lot instead, it would need each touched lot's usage before
    and after its projection (a re-delivery must add nothing) and the sums of unpriced models."""
    if not job_ids:  # a batch without results (submissions, batch ids, webhooks): no statement
        return
    announced = execute(conn, "select_cancelled", _ANNOUNCED_CANCELLED,
                        {"job_ids": sorted(set(job_ids))}).scalars().all()
    usages = job_usage(conn, list(announced)) if announced else {}
    if usages:
        execute(conn, "sum_usage", update(jobs).where(jobs.c.job_id == bindparam("id")).values(
            usage=bindparam("usage")),
            [{"id": job_id, "usage": _usage_json(usage)} for job_id, usage in usages.items()])


def _usage_json(usage: JobUsage | None) -> dict[str, object] | None:
    return usage.model_dump(mode="json") if usage is not None else None


def _finished_at(completed_at: datetime | None, cancelled_at: datetime | None,
                 updated_at: datetime) -> datetime:
    return completed_at or cancelled_at or updated_at
