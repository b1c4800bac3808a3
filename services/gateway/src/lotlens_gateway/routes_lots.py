"""`GET /api/v1/batch-jobs/{job_id}/lots`: a job's lots, page by page, while it runs and after.

`batch-results` answers only a finished job, and whole; a support page needs the lots of a
running job too, a page at a time, and just the failed ones with their reasons.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from lotlens_gateway import schemas
from lotlens_gateway.deps import Deps, DownloadClient, JobId
from lotlens_gateway.downloads import json_download
from lotlens_gateway.json_body import encoded_in_chunks
from lotlens_gateway.overlay import lots_page
from lotlens_gateway.query import EMPTY_IS_ABSENT
from lotlens_gateway.schemas import LotResult
from lotlens_gateway.schemas_jobs import Pagination

router = APIRouter(tags=["batch jobs"])
LotStatus = Literal["pending", "processing", "translating", "completed", "failed", "cancelled"]


class LotPagination(Pagination):
    """Where a lots page is, and where the next starts."""

    next_offset: int | None = Field(description=(
        "The `offset` of the next page (`offset` plus the lots this page holds), null on the last: "
        "a page its bytes cut short holds fewer lots than `limit`"))


class LotPage(BaseModel):
    """One page of a job's lots in request order."""

    job_id: str
    status: str = Field(description="The job's status")
    lots: list[LotResult]
    pagination: LotPagination


@router.get("/api/v1/batch-jobs/{job_id}/lots", response_model=LotPage,
            summary="A job's lots, a page at a time (running jobs too), optionally by status",
            description=("Header-signed: `X-Signature: sha256=<hex>` over the job id exactly as in the path. "
                         "Each lot in `batch-results`' shape (descriptions, missing images, the failure "
                         "reason, usage); `status=failed` lists the failed lots. A page holds as many of "
                         "`limit` lots as fit in `LOTLENS_LOTS_PAGE_MAX_BYTES` of JSON (1 MiB by default; "
                         "at least one lot): when that cuts it short, `pagination.limit` is the number of "
                         "lots it holds and `has_more` is true. The next page starts at "
                         "`pagination.next_offset` (`offset + len(lots)`; null on the last page): a client "
                         "adding the `limit` it asked for to `offset` would skip lots. The pages list the "
                         "lots `batch-results` lists: those the result-store has not recorded yet (a job "
                         "just accepted or cancelled) come after the others, `pending` (`cancelled` in a "
                         "cancelled job) with nothing done yet."),
            responses=schemas.error_responses(401, 403, 404, 422, own=schemas.DOWNLOAD_ERRORS))
async def job_lots(
        job_id: JobId, client_id: DownloadClient, deps: Deps,
        status: Annotated[LotStatus | None, EMPTY_IS_ABSENT,
                          Query(description="Only lots in this status")] = None,
        limit: Annotated[int, EMPTY_IS_ABSENT,
                         Query(ge=1, le=500, description="Page size, at most 500")] = 100,
        offset: Annotated[int, EMPTY_IS_ABSENT,
                          Query(ge=0, le=1_000_000_000, description="Lots to skip")] = 0,
) -> Response:
    """One page of lots and the pagination block."""

    def read() -> tuple[dict[str, object], list[dict[str, Any]]]:
        max_bytes = deps.settings.lots_page_max_bytes
        # One snapshot: the projected lots and then the outbox's read apart, lots the result-store
        # projected in between were in neither (`total` 90 of a 200-lot job, `has_more` false).
        job, found = deps.store.job_and(
            job_id, client_id, lambda conn, job: lots_page(conn, job, status, limit, offset, max_bytes),
            snapshot=True)
        page, total = found or ([], 0)
        more = offset + len(page) < total
        # A page its bytes cut short says how many lots it took: the next starts past them.
        taken = len(page) if more and page else limit
        pagination = {"limit": taken, "offset": offset, "total": total, "has_more": more,
                      "next_offset": offset + len(page) if more else None}
        return {"job_id": job_id, "status": job.status, "pagination": pagination}, page

    head, page = await run_in_threadpool(read)
    # Encoded a chunk at a time as the connection takes it, each lot freed once written.
    return json_download(encoded_in_chunks(head, "lots", page))
