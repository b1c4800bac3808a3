"""Batch intake: a validated submission becomes `JobSubmitted` + one `LotSubmitted` per lot.

201 means durably accepted: the events are committed to the outbox (with the idempotency answer,
in one transaction) before the answer is sent, and the relay publishes them to Kafka. If
PostgreSQL fails, nothing is written and the client gets 503; Kafka plays no part in the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from lotlens_common.clock import iso
from lotlens_common.envelope import Envelope
from lotlens_common.events import JobSubmitted, LotSubmitted
from lotlens_gateway.outbox import Outbox
from lotlens_gateway.validation import Submission

# The OpenAI Batch API's completion window: no estimate goes past it.
BATCH_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Estimate:
    """How long a job is first expected to take: a base plus a little per lot."""

    base_s: float
    per_lot_s: float

    def completion(self, created_at: datetime, total_lots: int) -> datetime:
        """The estimated completion time of a job created at `created_at`."""
        span = timedelta(seconds=self.base_s + self.per_lot_s * total_lots)
        return created_at + min(span, BATCH_WINDOW)


@dataclass(frozen=True)
class AcceptedJob:
    """A job to publish: who, when, and the request."""

    job_id: str
    client_id: str
    submission: Submission
    created_at: datetime
    estimated_completion: datetime
    trace: Mapping[str, str]
    # The finished job whose failed lots this job resubmits.
    retry_of: str | None = None


# JobSubmitted lists the job's distinct webhook URLs up to this many characters: a webhook per lot
# of 50,000 lots does not fit the one Kafka message the event is, and refused a valid job (413).
LISTED_WEBHOOK_CHARS = 1024 * 1024


def _listed(urls: tuple[str, ...]) -> tuple[tuple[str, ...], int | None]:
    """The URLs JobSubmitted lists, and their count when it lists only the first ones."""
    size = 0
    for count, url in enumerate(urls):
        size += len(url)
        if size > LISTED_WEBHOOK_CHARS:
            return urls[:count], len(urls)
    return urls, None


def envelopes(job: AcceptedJob) -> Iterator[Envelope]:
    """`JobSubmitted` first, then the lots in request order (`seq` = position), keyed by job id."""
    submission, total = job.submission, len(job.submission.lots)
    trace = dict(job.trace)
    webhook_urls, webhook_urls_total = _listed(submission.webhook_urls)
    yield Envelope(JobSubmitted(
        job_id=job.job_id, client_id=job.client_id, api_version=submission.version,
        languages=submission.languages, total_lots=total, webhook_urls=webhook_urls,
        created_at=job.created_at, estimated_completion=job.estimated_completion, retry_of=job.retry_of,
        webhook_urls_total=webhook_urls_total,
    ), client_id=job.client_id, occurred_at=job.created_at, trace=trace)
    for seq, lot in enumerate(submission.lots):
        event = LotSubmitted(
            job_id=job.job_id, lot_id=lot.lot_id, seq=seq, total_lots=total,
            additional_info=lot.additional_info, image_urls=lot.image_urls,
            languages=submission.languages, webhook=lot.webhook)
        yield Envelope(event, client_id=job.client_id, occurred_at=job.created_at, trace=trace)


def accepted_body(job: AcceptedJob) -> dict[str, Any]:
    """The contract's 201 body (with `retry_of` for a retry of failed lots)."""
    body: dict[str, Any] = {
        "job_id": job.job_id,
        "status": "accepted",
        "created_at": iso(job.created_at),
        "total_lots": len(job.submission.lots),
        "languages": list(job.submission.languages),
        "estimated_completion": iso(job.estimated_completion),
        "processing_mode": "batch",
        "webhook_configured": bool(job.submission.webhook_urls),
    }
    if job.retry_of is not None:
        body["retry_of"] = job.retry_of
    return body


# Records the answer (the idempotency key's) in the outbox's transaction.
Answer = Callable[[Connection, dict[str, Any]], None]


def accept_batch(job: AcceptedJob, topic: str, outbox: Outbox,
                 answer: Answer | None = None) -> dict[str, Any]:
    """Append the job's events to the outbox and `answer` the 201 body in the same transaction."""
    body = accepted_body(job)
    outbox.append(topic, envelopes(job), (lambda conn: answer(conn, body)) if answer else None)
    return body
