"""The rules of the job and lot life cycles, free of I/O.

A job moves `pending → processing → translating` and then to one terminal status (`translating`
from its first translation batch, or once none of its lots waits for vision any more); it never moves
backwards and never leaves a terminal status, whatever order the events arrive in. A lot ends
`completed` or `failed` once and stays there.
"""

from __future__ import annotations

from dataclasses import dataclass

from lotlens_common.events import TERMINAL_JOB_STATUSES

PENDING, PROCESSING, TRANSLATING = "pending", "processing", "translating"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
TERMINAL_LOT_STATUSES: frozenset[str] = frozenset({COMPLETED, FAILED})

# Every terminal status shares the top rank: none of them can replace another.
JOB_RANK: dict[str, int] = {PENDING: 0, PROCESSING: 1, TRANSLATING: 2,
                            **{status: 3 for status in sorted(TERMINAL_JOB_STATUSES)}}


_TERMINAL_RANK = max(JOB_RANK.values())


def job_rank(status: str) -> int:
    """How far a job status is along the life cycle (unknown statuses count as terminal)."""
    return JOB_RANK.get(status, _TERMINAL_RANK)


def advance_job(current: str, proposed: str) -> str:
    """The job status after an event proposes one: forward only, never out of a terminal status."""
    return proposed if job_rank(proposed) > job_rank(current) else current


def is_terminal_job(status: str) -> bool:
    """Whether a job status is final."""
    return job_rank(status) == job_rank(COMPLETED)


@dataclass(frozen=True)
class Settlement:
    """The terminal status a job reaches once every lot is accounted for."""

    status: str
    error_message: str | None


@dataclass(frozen=True)
class JobProgress:
    """What the read models know about a job's lots when deciding whether it is finished."""

    total_lots: int | None
    processed_lots: int
    failed_lots: int
    # Lots whose LotSubmitted is projected (their request data: position, webhook URL).
    submitted_lots: int
    # Completed lots, or lots failed at translation, whose VisionCompleted is not projected yet
    # (image counts or the vision answer's usage still unknown).
    undescribed_lots: int


def settle(job: JobProgress) -> Settlement | None:
    """The job's final status when all its lots are done, or None while it must wait.

    Topics are consumed in no global order, so counting settled lots is not enough: the job is
    announced (webhooks, results) only once every lot's submission and every completed lot's
    vision result are projected too, or the announcement would lack their data.
    """
    if not job.total_lots or job.processed_lots + job.failed_lots < job.total_lots:
        return None
    if job.submitted_lots < job.total_lots or job.undescribed_lots:
        return None
    if job.processed_lots == 0:
        return Settlement(FAILED, failure_message(job.total_lots))
    return Settlement(COMPLETED, None)


def failure_message(total_lots: int) -> str:
    """The error message of a job whose every lot failed."""
    return f"all {total_lots} lots failed"


def rank_sql(column: str) -> str:
    """A SQL CASE expression giving `column`'s job rank, generated from `JOB_RANK`."""
    branches = " ".join(f"WHEN '{status}' THEN {rank}" for status, rank in JOB_RANK.items())
    return f"(CASE {column} {branches} ELSE {job_rank(COMPLETED)} END)"
