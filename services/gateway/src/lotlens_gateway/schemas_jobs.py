"""Pydantic models of the polling and control bodies (`batch-status`, `batch-results`, `batch-jobs`, cancel).

Documentation only: the routes build plain dicts (see `views.py`) in exactly these shapes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from lotlens_gateway.schemas import JOB_ID, JobTokenUsage, LotResult


class Progress(BaseModel):
    """How far a job is."""

    total_lots: int
    processed_lots: int
    failed_lots: int
    completion_percentage: float = Field(examples=[67.0])
    estimated_completion: str | None = Field(description=(
        "The intake's estimate; once it has passed while the job still runs, revised at each read "
        "from the pace so far over the lots left, so it never lies in the past"))


class ProcessingDetails(BaseModel):
    """The job's OpenAI batches and stage."""

    openai_vision_batch_id: str | None = Field(description="The newest vision batch")
    openai_translation_batch_id: str | None = Field(description="The newest translation batch")
    vision_batch_ids: list[str] = Field(description="Every vision batch of the job, oldest first")
    translation_batch_ids: list[str] = Field(description="Every translation batch of the job, oldest first")
    current_stage: Literal["queued", "vision_analysis", "translation", "completed", "failed",
                           "cancelled"] = Field(
        description="The stage of the job's status: `translation` once none of its lots waits for vision")
    usage: JobTokenUsage | None = Field(default=None, description="Added, once the job is finished")


class JobStatus(BaseModel):
    """`GET /api/v1/batch-status/{job_id}`."""

    job_id: str = Field(examples=[JOB_ID])
    status: Literal["pending", "processing", "translating", "completed", "failed", "cancelled"] = Field(
        description="`processing` while any lot waits for vision; `translating` from the first translation "
                    "batch, or once every unfinished lot waits for translation")
    created_at: str | None
    updated_at: str | None
    completed_at: str | None
    cancelled_at: str | None
    progress: Progress
    languages: list[str]
    processing_details: ProcessingDetails
    openai_vision_batch_id: str | None = Field(description="Same as processing_details' (1.x clients)")
    openai_translation_batch_id: str | None = Field(description="Same as processing_details' (1.x clients)")
    error_message: str | None
    webhook_configured: bool
    retry_of: str | None = Field(default=None, description="The job whose failed lots this job retries")
    retried_as: str | None = Field(default=None, description="The job retrying this job's failed lots")


class RetryAccepted(BaseModel):
    """`POST /api/v1/batch-jobs/{job_id}/retry-failed`: the new job of the failed lots."""

    job_id: str = Field(description="The new job")
    status: str = Field(examples=["accepted"])
    created_at: str | None
    total_lots: int = Field(description="The failed lots resubmitted")
    languages: list[str]
    estimated_completion: str | None
    processing_mode: Literal["batch"]
    webhook_configured: bool
    retry_of: str = Field(description="The job whose failed lots are retried")


class ProcessingSummary(BaseModel):
    """Totals of a finished job."""

    total_lots: int
    processed_lots: int
    failed_lots: int
    total_images_processed: int
    total_processing_time: str | None = Field(examples=["45 minutes"])
    usage: JobTokenUsage | None = Field(default=None, description="Added: tokens and estimated cost")


class ResultsBlock(BaseModel):
    """The lots of a finished job."""

    version: str
    total_lots: int
    processed_lots: int
    failed_lots: int
    lots: list[LotResult]


class JobResults(BaseModel):
    """`GET /api/v1/batch-results/{job_id}` (200)."""

    job_id: str
    status: Literal["completed", "failed", "cancelled"]
    completed_at: str | None
    processing_summary: ProcessingSummary
    error_message: str | None
    results: ResultsBlock


class NotCompleted(BaseModel):
    """202 while the job runs."""

    error: Literal["Job not completed"]
    status: str
    progress: Progress
    message: str


class JobItem(BaseModel):
    """One job in a listing."""

    id: str = Field(examples=[JOB_ID])
    job_id: str
    status: str
    created_at: str | None
    updated_at: str | None
    total_lots: int
    processed_lots: int
    failed_lots: int
    languages: list[str]
    progress: Progress
    webhook_configured: bool
    error_message: str | None


class Pagination(BaseModel):
    """Where a page is."""

    limit: int
    offset: int
    total: int
    has_more: bool


class JobPagination(Pagination):
    """Where a page of jobs is, and where the next one starts."""

    next_cursor: str | None = Field(
        description="The next page's `cursor` (null on the last page): it starts right after this page's "
                    "last job, however many jobs share its second", examples=["1754379015123456." + JOB_ID])


class JobList(BaseModel):
    """`GET /api/v1/batch-jobs`."""

    jobs: list[JobItem]
    pagination: JobPagination


class Cancelled(BaseModel):
    """A cancellation was recorded."""

    job_id: str
    status: Literal["cancelled"]
    cancelled_at: str
    message: str = Field(examples=["Job successfully cancelled"])


class CannotCancel(BaseModel):
    """400: the job already finished."""

    error: Literal["Job cannot be cancelled"]
    status: str
    message: str
    code: Literal["JOB_NOT_CANCELLABLE"]
