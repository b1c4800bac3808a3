"""How jobs look in the API: the contract's bodies built from read-model views (pure)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from lotlens_common.clock import iso
from lotlens_common.events import TERMINAL_JOB_STATUSES
from lotlens_common.read_models import JobView, processing_summary

# What the job is doing, for `processing_details.current_stage`.
STAGES = {
    "pending": "queued",
    "processing": "vision_analysis",
    "translating": "translation",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}


def progress(job: JobView, now: datetime) -> dict[str, Any]:
    """The `progress` block at `now`."""
    return {
        "total_lots": job.total_lots,
        "processed_lots": job.processed_lots,
        "failed_lots": job.failed_lots,
        "completion_percentage": job.completion_percentage,
        "estimated_completion": iso(job.expected_completion(now)),
    }


def processing_details(job: JobView, batches: dict[str, list[str]]) -> dict[str, Any]:
    """OpenAI batch ids by stage (the newest in the singular fields, for 1.x clients) and the stage."""
    vision, translation = batches.get("vision", []), batches.get("translation", [])
    return {
        "openai_vision_batch_id": vision[-1] if vision else None,
        "openai_translation_batch_id": translation[-1] if translation else None,
        "vision_batch_ids": vision,
        "translation_batch_ids": translation,
        "current_stage": STAGES.get(job.status, job.status),
        **({"usage": job.usage} if job.usage is not None else {}),
    }


def status_body(job: JobView, batches: dict[str, list[str]], now: datetime) -> dict[str, Any]:
    """`GET /api/v1/batch-status/{job_id}`."""
    details = processing_details(job, batches)
    return {
        "job_id": job.job_id,
        "status": job.status,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "completed_at": iso(job.completed_at),
        "cancelled_at": iso(job.cancelled_at),
        "progress": progress(job, now),
        "languages": job.languages,
        "processing_details": details,
        # The 1.x document shows the batch ids at the top level.
        "openai_vision_batch_id": details["openai_vision_batch_id"],
        "openai_translation_batch_id": details["openai_translation_batch_id"],
        "error_message": job.error_message,
        "webhook_configured": job.webhook_configured,
        "retry_of": job.retry_of,
        "retried_as": job.retried_as,
    }


def job_item(job: JobView, now: datetime) -> dict[str, Any]:
    """One entry of `GET /api/v1/batch-jobs`."""
    return {
        "id": job.job_id,
        "job_id": job.job_id,
        "status": job.status,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "total_lots": job.total_lots,
        "processed_lots": job.processed_lots,
        "failed_lots": job.failed_lots,
        "languages": job.languages,
        "progress": progress(job, now),
        "webhook_configured": job.webhook_configured,
        "error_message": job.error_message,
    }


def is_terminal(job: JobView) -> bool:
    """Completed, failed or cancelled."""
    return job.status in TERMINAL_JOB_STATUSES


def not_completed_body(job: JobView, now: datetime) -> dict[str, Any]:
    """The 202 answer of the results endpoints while the job runs."""
    return {
        "error": "Job not completed",
        "status": job.status,
        "progress": progress(job, now),
        "message": f"Job is currently {job.status}. Results will be available when status is 'completed'.",
    }


def results_head(job: JobView) -> dict[str, Any]:
    """The results document without its lots (they are streamed after it)."""
    return {
        "job_id": job.job_id,
        "status": job.status,
        "completed_at": iso(job.completed_at or job.cancelled_at),
        "processing_summary": processing_summary(job),
        "error_message": job.error_message,
    }


def results_summary(job: JobView) -> dict[str, Any]:
    """`results` fields before `lots` (the 1.x document puts the counts there too)."""
    return {
        "version": job.api_version,
        "total_lots": job.total_lots,
        "processed_lots": job.processed_lots,
        "failed_lots": job.failed_lots,
    }


def cannot_cancel_body(job: JobView) -> dict[str, Any]:
    """The 400 answer for cancelling a finished job (the contract's shape, plus a code)."""
    return {
        "error": "Job cannot be cancelled",
        "status": job.status,
        "message": ("Only pending, processing, or translating jobs can be cancelled. "
                    f"Current status: {job.status}"),
        "code": "JOB_NOT_CANCELLABLE",
    }
