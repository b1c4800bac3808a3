"""Where a job's lots are: read from the batch stages' work tables, the read models and the
gateway's outbox, in one read-only transaction (`lotlens-admin jobs show`).

Each place answers a different question for on-call: the outbox whether the job's events reached
Kafka at all, each stage's lots and shards where its work waits (for a shard, for OpenAI, for a
batch being built), the read models what the client sees.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, select

from lotlens_common.stage.adapters import postgres as stage_sql
from lotlens_common.stage.adapters import postgres_queue_hold
from lotlens_common.tables import jobs, lots, outbox, stage_jobs, stage_shards

STAGES = ("vision", "translation")
# A shard in these needs attention (or time); the others are finished and only counted.
OPEN_SHARDS = ("building", "submitted")
# A lot's last error says why it is being sent again or why it failed; a lot done or cancelled
# since keeps the error of an earlier send, which no longer explains anything.
ERROR_STATES = (stage_sql.WAITING, stage_sql.SUBMITTED, stage_sql.FAILED)
TOP_ERRORS = 5


@dataclass(frozen=True)
class PauseLine:
    """Why a shard holds its stage paused: its batch cannot be read (`unreadable`, a submitted
    shard), or OpenAI refused its batch for the quota (`quota`, a building one: the stage-wide
    pause, every instance waiting for its next try)."""

    kind: str
    reason: str
    since: str  # ISO 8601, by the database's clock (the one that stamped it)
    age_s: float
    retry_in_s: float | None  # a quota pause's next try (<= 0: due)


@dataclass(frozen=True)
class ReleaseLine:
    """An operator's decision on a paused shard (`lotlens-admin shards release`): `resend` or
    `fail`, who, when (ISO 8601) and why; carried out once the shard is no longer submitted."""

    decision: str
    by: str | None
    at: str | None
    reason: str | None


@dataclass(frozen=True)
class QueueHoldLine:
    """OpenAI's enqueued-token queue for the stage's model refused its batches (`refusals` in a row,
    the last at `refused_at`), and while `held` the stage holds every job's new batches back, until
    `until` (ISO 8601, the database's clock); not `held`, the next batch built is the next try."""

    until: str
    refusals: int
    left_s: float
    refused_at: str  # or the operator's release of the last hold (`released`)
    held: bool
    released: bool


@dataclass(frozen=True)
class ShardLine:
    """One shard of the job: a batch sent (or being built) with some of its lots."""

    shard_id: str
    status: str
    attempt: int
    batch_id: str | None
    batch_status: str | None
    lot_count: int
    age_s: float  # of its batch at OpenAI (while it has none, or one recorded before 0038: of its claim)
    changed_s: float  # since the shard's row last changed
    pause: PauseLine | None
    release: ReleaseLine | None


@dataclass(frozen=True)
class ErrorLine:
    """One last error of lots still being sent or failed: how many lots, in which states."""

    error: str
    lots: int
    states: dict[str, int]


@dataclass(frozen=True)
class StageLine:
    """The job in one stage: its lots by state (`lot_states`' words) and by attempt (0: not sent
    yet), the most common last errors of its lots being sent again or failed, and its shards."""

    stage: str
    cancelled: bool
    lots: dict[str, int]
    attempts: dict[int, int]
    errors: list[ErrorLine]
    other_errors: int  # lots being sent again or failed with a last error not among `errors`
    shards: list[ShardLine]
    queue_hold: QueueHoldLine | None


@dataclass(frozen=True)
class ReadModelLine:
    """What the client sees: the job's row and its lots by status."""

    status: str
    total_lots: int | None
    processed_lots: int
    failed_lots: int
    lots: dict[str, int]
    age_s: float | None
    changed_s: float


@dataclass(frozen=True)
class OutboxLine:
    """The job's events the gateway accepted and the relay has not published yet."""

    unpublished: dict[str, int]  # event type -> count
    oldest_age_s: float | None


@dataclass(frozen=True)
class JobReport:
    """A job, as every table that holds it sees it."""

    job_id: str
    read_model: ReadModelLine | None
    stages: list[StageLine]
    outbox: OutboxLine

    @property
    def known(self) -> bool:
        """Whether any table holds the job (stage rows are pruned after it finished)."""
        return bool(self.read_model or self.stages or self.outbox.unpublished)


def _seconds_since(column: ColumnElement[Any]) -> ColumnElement[Any]:
    # By the database's clock, as every writer of these rows stamps them.
    return func.extract("epoch", func.now() - column)


def read_report(conn: Connection, job_id: str) -> JobReport:
    """The job's report; `known` is false when no table holds it."""
    return JobReport(job_id, _read_model(conn, job_id),
                     [line for stage in STAGES if (line := _stage(conn, stage, job_id)) is not None],
                     _outbox(conn, job_id))


def _read_model(conn: Connection, job_id: str) -> ReadModelLine | None:
    row = conn.execute(select(
        jobs.c.status, jobs.c.total_lots, jobs.c.processed_lots, jobs.c.failed_lots,
        _seconds_since(jobs.c.created_at).label("age_s"),
        _seconds_since(jobs.c.updated_at).label("changed_s")).where(jobs.c.job_id == job_id)).first()
    if row is None:
        return None
    counts = conn.execute(select(lots.c.status, func.count()).where(lots.c.job_id == job_id)
                          .group_by(lots.c.status).order_by(lots.c.status))
    return ReadModelLine(row.status, row.total_lots, row.processed_lots, row.failed_lots,
                         {status: int(n) for status, n in counts},
                         None if row.age_s is None else float(row.age_s), float(row.changed_s))


def _stage(conn: Connection, stage: str, job_id: str) -> StageLine | None:
    cancelled = conn.execute(select(stage_jobs.c.cancelled).where(
        stage_jobs.c.stage == stage, stage_jobs.c.job_id == job_id)).scalar_one_or_none()
    if cancelled is None:
        return None
    # The stage's own reading of each lot (a lot in a collected shard is done though its row
    # still says waiting, one in a shard by place has that send unwritten), counted.
    states = stage_sql.lot_states(conn, stage, job_id)
    by_state = Counter(lot.status for lot in states)
    by_attempt = Counter(lot.attempt for lot in states)
    shard = stage_shards.c
    rows = conn.execute(select(
        shard.shard_id, shard.status, shard.attempt, shard.batch_id, shard.batch_status, shard.lot_count,
        # Its batch's age at OpenAI, as the stage's max-age cancel and LotLensOpenAIBatchOverAge
        # read it: a shard refused for the quota for days is claimed long before its batch.
        _seconds_since(stage_sql.BATCH_MADE).label("age_s"),
        _seconds_since(shard.updated_at).label("changed_s"),
        shard.unreadable_since, shard.unreadable_reason,
        _seconds_since(shard.unreadable_since).label("unreadable_s"),
        shard.quota_paused_since, shard.quota_reason,
        _seconds_since(shard.quota_paused_since).label("quota_s"),
        (-_seconds_since(shard.quota_retry_at)).label("retry_in_s"),
        shard.release, shard.released_by, shard.released_at, shard.release_reason,
    ).where(shard.stage == stage, shard.job_id == job_id).order_by(shard.created_at, shard.shard_id))
    shards = [ShardLine(r.shard_id, r.status, r.attempt, r.batch_id, r.batch_status, r.lot_count,
                        float(r.age_s), float(r.changed_s), _pause(r), _release(r)) for r in rows]
    errors = _errors(states)
    return StageLine(stage, bool(cancelled), dict(sorted(by_state.items())), dict(sorted(by_attempt.items())),
                     errors[:TOP_ERRORS], sum(line.lots for line in errors[TOP_ERRORS:]), shards,
                     _queue_hold(conn, stage))


def _queue_hold(conn: Connection, stage: str) -> QueueHoldLine | None:
    """The stage's batches refused in a row and its hold, if any: why none of the job's waiting lots
    is sent, or is sent and refused."""
    series = next(iter(postgres_queue_hold.refusal_series(conn, stage)), None)
    if series is None:
        return None
    return QueueHoldLine(moment(series.held_until), series.refusals, series.left_s,
                         moment(series.refused_at), series.held, series.released)


def moment(value: datetime) -> str:
    """A moment as on-call and scripts read it: ISO 8601 to the second, with its offset."""
    return value.isoformat(timespec="seconds")


def _pause(row: Any) -> PauseLine | None:
    """The pause a shard holds, as the stage keeps it on the row: only while the shard is in the
    state that holds it (a closed shard's columns tell what was, not what holds)."""
    if row.status == "submitted" and row.unreadable_since is not None:
        return PauseLine("unreadable", row.unreadable_reason, moment(row.unreadable_since),
                         float(row.unreadable_s), None)
    if row.status == "building" and row.retry_in_s is not None:
        return PauseLine("quota", row.quota_reason, moment(row.quota_paused_since), float(row.quota_s),
                         float(row.retry_in_s))
    return None


def _release(row: Any) -> ReleaseLine | None:
    if row.release is None:
        return None
    return ReleaseLine(row.release, row.released_by,
                       None if row.released_at is None else moment(row.released_at), row.release_reason)


def _errors(states: list[stage_sql.LotState]) -> list[ErrorLine]:
    """The last errors of lots being sent again or failed, commonest first."""
    by_error: dict[str, Counter[str]] = {}
    for lot in states:
        if lot.last_error and lot.status in ERROR_STATES:
            by_error.setdefault(lot.last_error, Counter())[lot.status] += 1
    ranked = sorted(by_error.items(), key=lambda item: (-item[1].total(), item[0]))
    return [ErrorLine(error, counts.total(), dict(sorted(counts.items()))) for error, counts in ranked]


def _outbox(conn: Connection, job_id: str) -> OutboxLine:
    rows = conn.execute(select(
        outbox.c.event_type, func.count().label("n"),
        func.max(_seconds_since(outbox.c.created_at)).label("oldest_s"),
    ).where(outbox.c.job_id == job_id, outbox.c.published_at.is_(None))
        .group_by(outbox.c.event_type).order_by(outbox.c.event_type)).all()
    return OutboxLine({row.event_type: int(row.n) for row in rows},
                      max((float(row.oldest_s) for row in rows), default=None))

