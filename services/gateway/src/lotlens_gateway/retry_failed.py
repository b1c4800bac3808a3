"""Retrying a finished job's failed lots: a new job of just those lots, linked to the old one.

The new job's id is derived from the old one's, so every call for one job names the same new
job: a later call finds it (projected, or still in the outbox) and answers with it; two calls at
once are serialised by an idempotency key answered in the job's own outbox transaction. The new
job goes through the same intake as any batch submission (`intake.accept_batch`).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, select

from lotlens_common.clock import iso
from lotlens_common.envelope import decode
from lotlens_common.events import LotSubmitted
from lotlens_common.read_models import JobView
from lotlens_common.tables import lots, outbox
from lotlens_common.uuids import uuid5_text
from lotlens_gateway.errors import ApiError
from lotlens_gateway.overlay import outbox_lot_id
from lotlens_gateway.validation import LotRequest, Submission

_NAMESPACE = uuid.UUID("0d6f1c52-6a43-4c1e-9d0e-5b7f3a9e2c41")


def retry_job_id(job_id: str) -> str:
    """The id of the job that retries `job_id`'s failed lots (the same on every call)."""
    return uuid5_text(_NAMESPACE, f"retry-failed\n{job_id}")


def failed_lots(conn: Connection, job: JobView) -> list[LotRequest]:
    """The job's failed lots as they were submitted, in request order.

    A lot that failed before the result-store projected its `LotSubmitted` (another topic) has a
    row without its position, images, notes or webhook: those are read from the gateway's outbox.
    Read from the row, it was resubmitted with no image and no webhook (and, the retry being made
    once, never again); found in neither, the retry is refused until the lot is recorded.
    """
    query = (select(lots.c.lot_id, lots.c.seq, lots.c.additional_info, lots.c.image_urls, lots.c.webhook)
             .where(lots.c.job_id == job.job_id, lots.c.status == "failed").order_by(lots.c.seq))
    rows = conn.execute(query).all()
    unrecorded = [row.lot_id for row in rows if row.seq is None]
    submitted = _submitted_lots(conn, job.job_id, unrecorded) if unrecorded else {}
    if len(submitted) < len(unrecorded):
        raise ApiError(409, "JOB_NOT_FINISHED",
                       "Some of this job's failed lots are still being recorded; ask again in a minute.",
                       details={"job_id": job.job_id, "status": job.status,
                                "unrecorded_lots": len(unrecorded) - len(submitted)})
    found = [submitted[row.lot_id] if row.seq is None else (row.seq, LotRequest(
        row.lot_id, row.additional_info or "", tuple(row.image_urls or ()), row.webhook)) for row in rows]
    return [lot for _, lot in sorted(found, key=lambda pair: pair[0])]


def _submitted_lots(conn: Connection, job_id: str, lot_ids: list[str]) -> dict[str, tuple[int, LotRequest]]:
    """lot id → (position, lot as submitted) from the job's outbox `LotSubmitted` rows (while kept)."""
    payloads = conn.execute(select(outbox.c.payload).where(
        outbox.c.job_id == job_id, outbox.c.event_type == LotSubmitted.event_type,
        outbox_lot_id().in_(lot_ids))).scalars()
    found: dict[str, tuple[int, LotRequest]] = {}
    for payload in payloads:
        lot = decode(payload.encode()).event
        if isinstance(lot, LotSubmitted):
            found[lot.lot_id] = (lot.seq, LotRequest(lot.lot_id, lot.additional_info, lot.image_urls,
                                                     lot.webhook))
    return found


def check_retryable(job: JobView) -> None:
    """409 for a job still running (its failures are not final) or one its status counts no
    failed lot of (the client's own job, as `batch-status` shows it)."""
    if job.status not in ("completed", "failed", "cancelled"):
        raise ApiError(409, "JOB_NOT_FINISHED",
                       f"Only a finished job's failed lots can be retried; this job is {job.status}. "
                       "Wait for it to finish (or cancel it) first.",
                       details={"job_id": job.job_id, "status": job.status})
    if not job.failed_lots:
        raise _no_failed_lots(job)


def retry_submission(job: JobView, failed: list[LotRequest]) -> Submission:
    """The new job's request: the old job's version and languages, only its failed lots
    (409 as `check_retryable`, or when none of its lots reads failed)."""
    check_retryable(job)
    if not failed:
        raise _no_failed_lots(job)
    return Submission(version=job.api_version, languages=tuple(job.languages), lots=failed)


def _no_failed_lots(job: JobView) -> ApiError:
    return ApiError(409, "NO_FAILED_LOTS", "This job has no failed lots to retry",
                    details={"job_id": job.job_id, "status": job.status, "failed_lots": 0})


def retry_body(job: JobView) -> dict[str, Any]:
    """The answer naming an existing retry job (a repeated call): the 201 body's fields, current status."""
    return {
        "job_id": job.job_id,
        "status": job.status,
        "created_at": iso(job.created_at),
        "total_lots": job.total_lots,
        "languages": job.languages,
        "estimated_completion": iso(job.estimated_completion),
        "processing_mode": "batch",
        "webhook_configured": job.webhook_configured,
        "retry_of": job.retry_of,
    }
