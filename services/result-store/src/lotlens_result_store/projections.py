"""Projections of the job and lot events onto the read models: one function per event type.

Each function receives every event of its type from one consumer batch and applies them with a
few set-based statements (`unnest` over arrays, so the SQL text never depends on the batch size).
Every projection is idempotent by natural keys and moves state only forward, so a duplicated,
replayed or out-of-order event changes nothing it should not: lot transitions to a terminal
status are guarded in SQL, and the job counters are incremented only for the rows whose
transition actually happened (`RETURNING`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import Connection

from lotlens_common.db import json_rows
from lotlens_common.envelope import Envelope
from lotlens_common.events import (
    Event,
    JobCancelled,
    JobCompleted,
    JobSubmitted,
    LotFailed,
    LotSubmitted,
    TranslationBatchSubmitted,
    TranslationCompleted,
    VisionBatchSubmitted,
    VisionCompleted,
    WebhookAttempted,
    WebhookDelivered,
    WebhookFailed,
)
from lotlens_result_store import sql, webhooks
from lotlens_result_store.changes import JobChange, JobChanges
from lotlens_result_store.grouping import event_of, json_array, latest_envelopes, latest_events
from lotlens_result_store.metrics import execute
from lotlens_result_store.status import CANCELLED, FAILED, PROCESSING, TRANSLATING, failure_message
from lotlens_result_store.usage import record_settled_usage, usage_json, usage_value

Projection = Callable[[Connection, Sequence[Envelope], JobChanges], None]


def project_job_submitted(conn: Connection, envelopes: Sequence[Envelope], changes: JobChanges) -> None:
    """Fill the job's descriptive columns (the gateway may have inserted the row already)."""
    submitted = latest_events(envelopes, JobSubmitted, lambda event: (event.job_id,))
    execute(conn, "upsert_jobs", sql.UPSERT_SUBMITTED_JOBS, {
        "job_ids": [e.job_id for e in submitted],
        "client_ids": [e.client_id for e in submitted],
        "api_versions": [e.api_version for e in submitted],
        "languages": [json_array(e.languages) for e in submitted],
        "totals": [e.total_lots for e in submitted],
        "webhooks": [bool(e.webhook_urls) for e in submitted],
        "created": [e.created_at for e in submitted],
        "estimated": [e.estimated_completion for e in submitted],
        "retry_of": [e.retry_of for e in submitted],
    })
    for envelope in envelopes:
        changes.touch(envelope, event_of(envelope, JobSubmitted).total_lots)


def project_lot_submitted(conn: Connection, envelopes: Sequence[Envelope], changes: JobChanges) -> None:
    """Record each lot's request data (a later-stage event may have created its row first)."""
    submitted = latest_events(envelopes, LotSubmitted, lambda event: (event.job_id, event.lot_id))
    execute(conn, "upsert_lots", sql.UPSERT_SUBMITTED_LOTS, {"rows": json_rows(
        {"job_id": e.job_id, "lot_id": e.lot_id, "seq": e.seq, "additional_info": e.additional_info,
         "image_urls": e.image_urls, "webhook": e.webhook} for e in submitted)})
    for envelope in envelopes:
        changes.touch(envelope, event_of(envelope, LotSubmitted).total_lots)


def project_vision_batch(conn: Connection, envelopes: Sequence[Envelope], changes: JobChanges) -> None:
    """Record the OpenAI batch; the job is at least processing."""
    _insert_batches(conn, envelopes, VisionBatchSubmitted, "vision")
    for envelope in envelopes:
        changes.touch(envelope, status=PROCESSING)


def project_translation_batch(conn: Connection, envelopes: Sequence[Envelope],
                              changes: JobChanges) -> None:
    """Record the OpenAI batch; the job is at least translating."""
    _insert_batches(conn, envelopes, TranslationBatchSubmitted, "translation")
    for envelope in envelopes:
        changes.touch(envelope, status=TRANSLATING)


def project_vision_completed(conn: Connection, envelopes: Sequence[Envelope], changes: JobChanges) -> None:
    """Record the lot's image counts; it moves on to translation unless already settled."""
    described = latest_events(envelopes, VisionCompleted, lambda event: (event.job_id, event.lot_id))
    for envelope in envelopes:
        changes.touch(envelope, event_of(envelope, VisionCompleted).total_lots, status=PROCESSING)
    result = execute(conn, "upsert_lots", sql.UPSERT_DESCRIBED_LOTS, {
        "job_ids": [e.job_id for e in described],
        "lot_ids": [e.lot_id for e in described],
        "images": [e.processed_images for e in described],
        "missing": [json_array(e.missing_images) for e in described],
        "usages": usage_json(described),
    })
    # A lot whose translation was projected first was counted with 0 images: add them now.
    for job_id, images in result:
        _change(changes, job_id).images_processed += images


def project_translation_completed(conn: Connection, envelopes: Sequence[Envelope],
                                  changes: JobChanges) -> None:
    """Store every language's description and complete the lot (counted once)."""
    translated = latest_envelopes(envelopes, TranslationCompleted,
                                   lambda event: (event.job_id, event.lot_id))
    events = [event_of(e, TranslationCompleted) for e in translated]
    execute(conn, "insert_descriptions", sql.INSERT_DESCRIPTIONS, {"rows": json_rows(
        {"job_id": event.job_id, "lot_id": event.lot_id, "language": language, "damages": html}
        for event in events for language, html in event.descriptions.items())})
    for envelope in envelopes:
        changes.touch(envelope, status=PROCESSING)
    completed = execute(conn, "complete_lots", sql.COMPLETE_LOTS, {"rows": json_rows(
        {"job_id": event.job_id, "lot_id": event.lot_id, "processed_at": envelope.occurred_at,
         "usage": usage_value(event)} for envelope, event in zip(translated, events, strict=True))}).all()
    for job_id, _lot_id, images in completed:
        change = _change(changes, job_id)
        change.processed_lots += 1
        change.images_processed += images
    record_settled_usage(conn, events, {(job_id, lot_id) for job_id, lot_id, _ in completed})


def project_lot_failed(conn: Connection, envelopes: Sequence[Envelope], changes: JobChanges) -> None:
    """Fail the lot with its reason (counted once)."""
    failed = latest_envelopes(envelopes, LotFailed, lambda event: (event.job_id, event.lot_id))
    events = [event_of(e, LotFailed) for e in failed]
    for envelope in envelopes:
        changes.touch(envelope, event_of(envelope, LotFailed).total_lots, status=PROCESSING)
    result = execute(conn, "fail_lots", sql.FAIL_LOTS, {
        "job_ids": [e.job_id for e in events],
        "lot_ids": [e.lot_id for e in events],
        "reasons": [e.reason for e in events],
        "images": [e.processed_images for e in events],
        "missing": [json_array(e.missing_images) for e in events],
        "times": [e.occurred_at for e in failed],
    })
    for job_id, lots in result:
        _change(changes, job_id).failed_lots += lots


def project_job_cancelled(conn: Connection, envelopes: Sequence[Envelope], changes: JobChanges) -> None:
    """Cancel the job unless it already reached a terminal status (applied with the job row), and
    its unfinished lots (a finished job has none)."""
    execute(conn, "cancel_lots", sql.CANCEL_LOTS, {"job_ids": sorted({e.job_id for e in envelopes})})
    for envelope in envelopes:
        change = changes.touch(envelope, status=CANCELLED)
        cancelled_at = event_of(envelope, JobCancelled).cancelled_at
        change.cancelled_at = min(change.cancelled_at or cancelled_at, cancelled_at)


def project_job_completed(conn: Connection, envelopes: Sequence[Envelope], _changes: JobChanges) -> None:
    """Make the announced outcome the job's final state (live it already is; a replay may have
    seen a cancel and the last lot in the other order) and mark the job announced."""
    announced = latest_envelopes(envelopes, JobCompleted, lambda event: (event.job_id,))
    events = [event_of(e, JobCompleted) for e in announced]
    execute(conn, "upsert_jobs", sql.APPLY_ANNOUNCED_JOBS, {
        "job_ids": [e.job_id for e in events],
        "client_ids": [e.client_id for e in announced],
        "statuses": [e.status for e in events],
        "totals": [e.total_lots for e in events],
        "errors": [failure_message(e.total_lots) if e.status == FAILED else None for e in events],
        "finished": [e.completed_at for e in events],
        "usages": [e.usage.model_dump_json() if e.usage is not None else None for e in events],
    })


def write_job_changes(conn: Connection, changes: JobChanges) -> None:
    """Apply the batch's accumulated effect on every touched job in one upsert."""
    if not changes:
        return
    items = changes.items()
    execute(conn, "upsert_jobs", sql.APPLY_JOB_CHANGES, {
        "job_ids": [job_id for job_id, _ in items],
        "client_ids": [c.client_id for _, c in items],
        "totals": [c.total_lots for _, c in items],
        "statuses": [c.status for _, c in items],
        "cancelled": [c.cancelled_at for _, c in items],
        "processed": [c.processed_lots for _, c in items],
        "failed": [c.failed_lots for _, c in items],
        "images": [c.images_processed for _, c in items],
    })


# Applied in this order within a batch. The projections commute (each is guarded by natural keys
# and forward-only transitions), so the order only mirrors the pipeline's flow.
PROJECTIONS: dict[type[Event], Projection] = {
    JobSubmitted: project_job_submitted,
    LotSubmitted: project_lot_submitted,
    VisionBatchSubmitted: project_vision_batch,
    VisionCompleted: project_vision_completed,
    TranslationBatchSubmitted: project_translation_batch,
    TranslationCompleted: project_translation_completed,
    LotFailed: project_lot_failed,
    JobCancelled: project_job_cancelled,
    JobCompleted: project_job_completed,
    WebhookAttempted: webhooks.project_attempted,
    WebhookDelivered: webhooks.project_delivered,
    WebhookFailed: webhooks.project_failed,
}


def project(conn: Connection, envelopes: Sequence[Envelope]) -> JobChanges:
    """Apply a consumer batch to the read models; returns what it did to each job."""
    by_type: dict[type[Event], list[Envelope]] = {}
    for envelope in envelopes:
        by_type.setdefault(type(envelope.event), []).append(envelope)
    changes = JobChanges()
    for event_type, projection in PROJECTIONS.items():
        if group := by_type.get(event_type):
            projection(conn, group, changes)
    write_job_changes(conn, changes)
    return changes


def _insert_batches(conn: Connection, envelopes: Sequence[Envelope],
                    event_type: type[VisionBatchSubmitted | TranslationBatchSubmitted], stage: str) -> None:
    batches = latest_envelopes(envelopes, event_type, lambda event: (event.batch_id,))
    events = [event_of(e, event_type) for e in batches]
    execute(conn, "insert_openai_batches", sql.INSERT_OPENAI_BATCHES, {
        "batch_ids": [e.batch_id for e in events],
        "job_ids": [e.job_id for e in events],
        "stage": stage,
        "shard_ids": [e.shard_id for e in events],
        "attempts": [e.attempt for e in events],
        "lot_counts": [len(e.lot_ids) for e in events],
        "created": [e.occurred_at for e in batches],
    })


def _change(changes: JobChanges, job_id: str) -> JobChange:
    change = changes.get(job_id)
    if change is None:  # every row returned belongs to an event of this batch, which touched it
        raise LookupError(f"job {job_id} not touched by the batch")
    return change
