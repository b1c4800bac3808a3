"""Polling and control of batch jobs (header-signed; a client sees only its own jobs)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BeforeValidator
from starlette.concurrency import run_in_threadpool

from lotlens_common.clock import iso
from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCancelled
from lotlens_gateway import schemas, schemas_jobs
from lotlens_gateway.deps import Deps, DownloadClient, JobClient, JobId, ListingClient
from lotlens_gateway.downloads import json_download
from lotlens_gateway.job_store import JobEnded, JobFilter, hold_unended
from lotlens_gateway.listing_cursor import CURSOR_PATTERN, ListingCursor
from lotlens_gateway.query import EMPTY_IS_ABSENT
from lotlens_gateway.results import iter_results_document, small_document
from lotlens_gateway.shutdown import to_the_end
from lotlens_gateway.views import (
    cannot_cancel_body,
    is_terminal,
    job_item,
    not_completed_body,
    status_body,
)

router = APIRouter(tags=["batch jobs"])

JobStatusName = Literal["pending", "processing", "translating", "completed", "failed", "cancelled"]
_SIGNED = "Header-signed: `X-Signature: sha256=<hex>` over the job id exactly as in the path."
_RESULTS_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": schemas_jobs.NotCompleted, "description": "The job is still running"},
    **schemas.error_responses(401, 403, 404, own=schemas.DOWNLOAD_ERRORS)}


@router.get("/api/v1/batch-status/{job_id}", response_model=schemas_jobs.JobStatus,
            summary="Status, progress and OpenAI batch ids of a job", description=_SIGNED,
            responses=schemas.error_responses(401, 403, 404, 429, 503))
async def batch_status(job_id: JobId, client_id: JobClient, deps: Deps) -> JSONResponse:
    """The job's status document."""
    job, batches = await run_in_threadpool(deps.store.status_for_client, job_id, client_id)
    return JSONResponse(status_body(job, batches, deps.clock()))


async def _results(job_id: str, client_id: str, deps: Deps, download: bool) -> Response:
    job, document = await run_in_threadpool(deps.store.job_and, job_id, client_id, small_document)
    if not is_terminal(job):
        return JSONResponse(not_completed_body(job, deps.clock()), status_code=202)
    attachment = f'attachment; filename="batch_results_{job_id}.json"'
    headers = {"Content-Disposition": attachment} if download else {}
    if document is not None:
        return json_download(document, headers)
    deps.metrics.db("read")
    return json_download(iter_results_document(deps.store.reads, job), headers)


@router.get("/api/v1/batch-results/{job_id}", response_model=schemas_jobs.JobResults,
            summary="Results of a finished job (202 while it runs)",
            description=_SIGNED + " The document of a big job is streamed, lot by lot.",
            responses=_RESULTS_RESPONSES)
async def batch_results(job_id: JobId, client_id: DownloadClient, deps: Deps) -> Response:
    """Every lot with its descriptions, for completed, failed and cancelled jobs."""
    return await _results(job_id, client_id, deps, download=False)


@router.get("/api/v1/batch-results/{job_id}/download", response_model=schemas_jobs.JobResults,
            summary="The results document as a file (`batch_results_{job_id}.json`)",
            description=_SIGNED + " Same JSON as `batch-results`, streamed as an attachment.",
            responses=_RESULTS_RESPONSES)
async def download_results(job_id: JobId, client_id: DownloadClient, deps: Deps) -> Response:
    """The results as an attachment."""
    return await _results(job_id, client_id, deps, download=True)


def _utc(moment: datetime | None) -> datetime | None:
    # Normalised here: PostgreSQL refuses offsets past ±15:59 that ISO 8601 allows.
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # Before year 1 or after 9999 in UTC (0001-01-01T00:00+14:00): as far as the calendar goes.
        return (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=UTC)


# A time followed by a space and a UTC offset: the `+` of `T11:30:00+03:00`, decoded as a space.
_OFFSET_SIGN_DECODED = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?) (\d{2}:?\d{2})\Z")


def _iso_time(value: object) -> object:
    """The time the client wrote, its `+` offset restored; refused when it is a number."""
    if not isinstance(value, str):
        return value
    # A number is no ISO 8601 time: pydantic read `20250805` as Unix seconds (1970-08-23).
    if value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("expected an ISO 8601 date or time, such as 2025-08-05T07:30:00Z")
    # The query is signed as sent, so it is written by hand, not form-encoded: `isoformat()`'s
    # `+03:00` arrived as ` 03:00` and the listing answered 422 to a valid time. A space has no
    # other meaning there.
    return _OFFSET_SIGN_DECODED.sub(r"\1+\2", value)


_ISO_TIME = BeforeValidator(_iso_time)


@router.get("/api/v1/batch-jobs", response_model=schemas_jobs.JobList,
            summary="The client's jobs, newest first",
            description=("Header-signed: `X-Signature: sha256=<hex>` over the raw query string exactly as "
                         "sent (the empty string without one). The query names only the parameters below "
                         "(`name=value`; a value may be empty: no filter, or the default `limit` and "
                         "`offset`); any other name is 422 `VALIDATION_ERROR` before the signature is "
                         "checked. Timestamps without a zone are UTC; a `+` offset may be sent unencoded "
                         "(`created_after=2025-08-05T10:30:00+03:00`: decoded to a space, it is read back "
                         "as the offset's sign). To walk all the jobs, send each page's "
                         "`pagination.next_cursor` as the next page's `cursor` (null on the last page): "
                         "exact where times, shown in whole seconds, cannot be, and unmoved by jobs "
                         "submitted meanwhile, which shift an `offset`."),
            responses=schemas.error_responses(401, 403, 422, 429, 503))
async def batch_jobs(
        client_id: ListingClient, deps: Deps,
        status: Annotated[JobStatusName | None, EMPTY_IS_ABSENT,
                          Query(description="Only jobs in this status")] = None,
        limit: Annotated[int, EMPTY_IS_ABSENT,
                         Query(ge=1, le=100, description="Page size, at most 100")] = 10,
        offset: Annotated[int, EMPTY_IS_ABSENT,
                          Query(ge=0, le=1_000_000_000, description="Jobs to skip")] = 0,
        created_after: Annotated[datetime | None, _ISO_TIME, EMPTY_IS_ABSENT,
                                 Query(description="ISO 8601, inclusive")] = None,
        created_before: Annotated[datetime | None, _ISO_TIME, EMPTY_IS_ABSENT,
                                  Query(description=("ISO 8601, exclusive. Not a way to page: times are "
                                                     "shown in whole seconds (page by `cursor`)"))] = None,
        cursor: Annotated[str | None, EMPTY_IS_ABSENT, Query(
            pattern=CURSOR_PATTERN, description=(
                "A previous page's `pagination.next_cursor`: only the jobs listed after that page's "
                "last job (the other filters still apply; `total` counts the jobs from here on)"))] = None,
) -> JSONResponse:
    """One page of jobs and the pagination block."""
    where = JobFilter(status=status, created_after=_utc(created_after), created_before=_utc(created_before),
                      after=ListingCursor.parse(cursor) if cursor else None)
    found, total = await run_in_threadpool(deps.store.jobs_for_client, client_id, where, limit, offset)
    now = deps.clock()
    has_more = offset + len(found) < total
    return JSONResponse({
        "jobs": [job_item(job, now) for job in found],
        "pagination": {"limit": limit, "offset": offset, "total": total, "has_more": has_more,
                       "next_cursor": str(ListingCursor.after(found[-1])) if has_more and found else None},
    })


@router.post("/api/v1/batch-jobs/{job_id}/cancel", response_model=schemas_jobs.Cancelled,
             summary="Cancel a pending or running job",
             description=(_SIGNED + " Records `JobCancelled`: lots not yet sent to OpenAI are dropped "
                          "and running OpenAI batches are cancelled. From the 200 on, `batch-status` says "
                          "`cancelled` and every unfinished lot reads `cancelled`; the job ends `cancelled` "
                          "(its webhook too), even when its last lot finishes meanwhile."),
             responses={400: {"model": schemas_jobs.CannotCancel, "description": "The job already finished"},
                        **schemas.error_responses(401, 403, 404, 429, 503)})
async def cancel_job(job_id: JobId, client_id: JobClient, deps: Deps) -> JSONResponse:
    """Record the cancellation (the outbox) and confirm it."""
    job = await run_in_threadpool(deps.store.job_for_client, job_id, client_id)
    if is_terminal(job):
        return JSONResponse(cannot_cancel_body(job), status_code=400)
    cancelled_at = deps.clock()
    envelope = Envelope(JobCancelled(job_id=job_id, cancelled_at=cancelled_at), client_id=client_id,
                        occurred_at=cancelled_at)
    try:
        # Accepted only while the job is still running, under the lock its projection takes.
        await to_the_end(deps.outbox.append, deps.settings.topics.submissions, [envelope],
                         partial(hold_unended, job=job))
    except JobEnded as ended:
        return JSONResponse(cannot_cancel_body(ended.job), status_code=400)
    return JSONResponse({"job_id": job_id, "status": "cancelled", "cancelled_at": iso(cancelled_at),
                         "message": "Job successfully cancelled"})
