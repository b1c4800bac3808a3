"""Projections of the job and lot events onto the read models: one function per event type.

Each function receives every event of its type from one consumer batch and applies them with a
few set-based statements (rows as one JSON document, so the SQL text never depends on the batch
size); rows that are only ever inserted are COPYed when none of them is there yet (`sql.py`).
Every projection is idempotent by natural keys and moves state only forward, so a duplicated,
replayed or out-of-order event changes nothing it should not: lot transitions to a terminal
status are guarded in SQL, and the job counters are incremented only for the rows whose
transition actually happened (`RETURNING`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection

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
from lotlens_common.row_sets import copy_row, json_rows
from lotlens_result_store import sql, webhooks
from lotlens_result_store.changes import JobChange, JobChanges
from lotlens_result_store.copy_texts import copy_texts
from lotlens_result_store.grouping import (
    LOT,
    by_type,
    event_of,
    events_of,
    latest_envelopes,
    latest_events,
    settled_once,
)
from lotlens_result_store.metrics import append, execute
from lotlens_result_store.running import update_running_lots
from lotlens_result_store.status import CANCELLED, FAILED, PROCESSING, TRANSLATING, failure_message
from lotlens_result_store.usage import record_settled_usage, stored_usage

Projection = Callable[[Connection, Sequence[Envelope], JobChanges], None]


def project_job_submitted(conn: Connection, envelopes: Sequence[Envelope], changes: JobChanges) -> None:
    """Fill the job's descriptive columns (the gateway may have inserted the row already)."""
    submitted = latest_events(envelopes, JobSubmitted, lambda event: (event.job_id,))
    execute(conn, "upsert_jobs", sql.UPSERT_SUBMITTED_JOBS, {"rows": json_rows(
        {"job_id": e.job_id, "client_id": e.client_id, "api_version": e.api_version,
         "languages": e.languages, "total_lots": e.total_lots, "webhook_configured": bool(e.webhook_urls),
         "created_at": e.created_at, "estimated_completion": e.estimated_completion, "retry_of": e.retry_of}
        for e in submitted)})
    for envelope in envelopes:
        changes.touch(envelope, event_of(envelope, JobSubmitted).total_lots)


def project_lot_submitted(conn: Connection, envelopes: Sequence[Envelope], changes: JobChanges) -> None:
    """Record each lot's request data (a later-stage event may have created its row first)."""
    submitted = latest_events(envelopes, LotSubmitted, LOT)
    new_rows = b"".join(copy_row((e.job_id, e.lot_id, str(e.seq), e.additional_info,
                                  orjson.dumps(e.image_urls).decode(), e.webhook)) for e in submitted)
    if not append(conn, "copy_lots", sql.COPY_SUBMITTED_LOTS, new_rows):
        execute(conn, "upsert_lots", sql.UPSERT_SUBMITTED_LOTS, {"rows": json_rows(
            {"job_id": e.job_id, "lot_id": e.lot_id, "seq": e.seq, "additional_info": e.additional_info,
             "image_urls": e.image_urls, "webhook": e.webhook} for e in submitted)})
    changes.touch_all(envelopes, total_lots=True)
    # One statement per batch, not per lot: a row written after its job's cancel is cancelled too.
    cancelled = execute(conn, "select_cancelled_jobs", sql.CANCELLED_JOBS,
                        {"job_ids": sorted({e.job_id for e in submitted})}).scalars().all()
    if cancelled:
        _add_images(changes, execute(conn, "cancel_lots", sql.CANCEL_LOTS, {"job_ids": list(cancelled)}))


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
    described = latest_events(envelopes, VisionCompleted, LOT)
    changes.touch_all(envelopes, status=PROCESSING, total_lots=True)
    rows = [{"job_id": e.job_id, "lot_id": e.lot_id, "processed_images": e.processed_images,
             "missing_images": e.missing_images, "usage": stored_usage(e.usage)} for e in described]
    # A running lot adds no images (`running.py`).
    written = update_running_lots(conn, "describe_running_lots", sql.DESCRIBE_RUNNING_LOTS, rows)
    if written.rest:
        # A lot that stopped first (its translation or failure projected first, or cancelled) was
        # counted with the images it had then: add the difference now.
        _add_images(changes, execute(conn, "upsert_lots", sql.UPSERT_DESCRIBED_LOTS,
                                     {"rows": json_rows(written.rest)}))


def project_translation_completed(conn: Connection, envelopes: Sequence[Envelope],
                                  changes: JobChanges) -> None:
    """Complete the lot (counted once) and store every language's description with it."""
    translated = latest_envelopes(envelopes, TranslationCompleted, LOT)
    events = events_of(translated, TranslationCompleted)
    changes.touch_all(envelopes, status=PROCESSING)
    rows = [{"job_id": event.job_id, "lot_id": event.lot_id, "processed_at": envelope.occurred_at,
             "usage": stored_usage(event.usage)} for envelope, event in zip(translated, events, strict=True)]
    written = update_running_lots(conn, "complete_running_lots", sql.COMPLETE_RUNNING_LOTS, rows)
    for job_id, lots, images, _ in written.per_job:
        change = _change(changes, job_id)
        change.processed_lots += lots
        change.images_processed += images
    if not written.rest:  # every lot completed now (`running.py`): the usual batch
        _store_descriptions(conn, events)
        return
    completed = execute(conn, "complete_lots", sql.COMPLETE_LOTS, {"rows": json_rows(written.rest)}).all()
    for job_id, _lot_id, added in completed:
        change = _change(changes, job_id)
        change.processed_lots += 1
        change.images_processed += added
    # Only the lots completed now: a replayed one has its texts, and one failed first (a late or
    # replayed answer) keeps its LotFailed's alone, in a rebuild too. Stored whatever the status,
    # a failed lot showed every language with `missing_languages: []`.
    now = written.lots() | {(job_id, lot_id) for job_id, lot_id, _ in completed}
    _store_descriptions(conn, [event for event in events if (event.job_id, event.lot_id) in now])
    record_settled_usage(conn, events, now)


def project_lot_failed(conn: Connection, envelopes: Sequence[Envelope], changes: JobChanges) -> None:
    """Fail the lot with its reason (counted once), what its failed stage's answers used and the
    descriptions it keeps (its English, when it failed at translation)."""
    failed = latest_envelopes(envelopes, LotFailed, LOT)
    events = events_of(failed, LotFailed)
    # Stored whatever the lot's status: a completed lot has these texts already (left as they are),
    # and a cancelled one a paid result fails (below) is shown with them.
    _store_descriptions(conn, [event for event in events if event.descriptions])
    changes.touch_all(envelopes, status=PROCESSING, total_lots=True)
    rows = [{"job_id": event.job_id, "lot_id": event.lot_id, "reason": event.reason, "stage": event.stage,
             "processed_images": event.processed_images, "missing_images": event.missing_images,
             "processed_at": envelope.occurred_at, "usage": stored_usage(event.usage)}
            for envelope, event in zip(failed, events, strict=True)]
    # A running lot is failed in place (`running.py`); FAIL_LOTS takes the others.
    written = update_running_lots(conn, "fail_running_lots", sql.FAIL_RUNNING_LOTS, rows)
    result = [(job_id, lots, added) for job_id, lots, added, _ in written.per_job]
    if written.rest:
        result += execute(conn, "fail_lots", sql.FAIL_LOTS, {"rows": json_rows(written.rest)}).all()
    for job_id, lots, added in result:
        change = _change(changes, job_id)
        change.failed_lots += lots
        change.images_processed += added


def project_job_cancelled(conn: Connection, envelopes: Sequence[Envelope], changes: JobChanges) -> None:
    """Cancel the job unless it already reached a terminal status (applied with the job row), and
    its unfinished lots (a finished job has none)."""
    for envelope in envelopes:
        change = changes.touch(envelope, status=CANCELLED)
        cancelled_at = event_of(envelope, JobCancelled).cancelled_at
        change.cancelled_at = min(change.cancelled_at or cancelled_at, cancelled_at)
    _add_images(changes, execute(conn, "cancel_lots", sql.CANCEL_LOTS,
                                 {"job_ids": sorted({e.job_id for e in envelopes})}))


def project_job_completed(conn: Connection, envelopes: Sequence[Envelope], _changes: JobChanges) -> None:
    """Make the announced outcome the job's final state (live it already is; a replay may have
    seen a cancel and the last lot in the other order) and mark the job announced."""
    announced = latest_envelopes(envelopes, JobCompleted, lambda event: (event.job_id,))
    events = [event_of(e, JobCompleted) for e in announced]
    execute(conn, "upsert_jobs", sql.APPLY_ANNOUNCED_JOBS, {"rows": json_rows(
        {"job_id": event.job_id, "client_id": envelope.client_id, "status": event.status,
         "total_lots": event.total_lots,
         "error_message": failure_message(event.total_lots) if event.status == FAILED else None,
         "finished_at": event.completed_at, "usage": event.usage}
        for envelope, event in zip(announced, events, strict=True))})


def write_job_changes(conn: Connection, changes: JobChanges) -> None:
    """Apply the batch's accumulated effect on every touched job in one upsert."""
    if not changes:
        return
    execute(conn, "upsert_jobs", sql.APPLY_JOB_CHANGES, {"rows": json_rows(
        {"job_id": job_id, "client_id": c.client_id, "total_lots": c.total_lots, "status": c.status,
         "cancelled_at": c.cancelled_at, "processed_lots": c.processed_lots, "failed_lots": c.failed_lots,
         "images_processed": c.images_processed} for job_id, c in changes.items())})


# Applied in this order within a batch (within a run, see `_runs`). The projections commute (each
# is guarded by natural keys and forward-only transitions), so the order only mirrors the pipeline's
# flow; the one exception, a lot settled twice, is cut into runs.
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
    changes = JobChanges()
    groups = by_type(envelopes)
    # Nearly always one run: the batch grouped once, not walked again to be cut.
    for run in [groups] if settled_once(groups) else map(by_type, _runs(envelopes)):
        for event_type, projection in PROJECTIONS.items():
            if group := run.get(event_type):
                projection(conn, group, changes)
    write_job_changes(conn, changes)
    return changes


def _runs(envelopes: Sequence[Envelope]) -> list[Sequence[Envelope]]:
    """The batch cut before each event that settles a lot another event of the run settled already.

    A lot's first settling event in its topic's order wins (the later one is a late answer: its
    usage is kept, its outcome is not), as when the two come in separate batches; projected by type,
    a batch (a rebuild's, of thousands) let a TranslationCompleted complete a lot the LotFailed
    before it had failed, and count it in its job. One run, COPY fast paths included, unless a lot
    is settled twice.
    """
    runs: list[Sequence[Envelope]] = []
    start, settling = 0, dict[tuple[str, str], str]()  # lot: the event that settles it in this run
    for index, envelope in enumerate(envelopes):
        event = envelope.event
        if not isinstance(event, TranslationCompleted | LotFailed):
            continue
        lot = (event.job_id, event.lot_id)
        if settling.setdefault(lot, envelope.event_id) != envelope.event_id:  # a copy is the same event
            runs.append(envelopes[start:index])
            start, settling = index, {lot: envelope.event_id}
    return [*runs, envelopes[start:]]


def advance_described_jobs(conn: Connection, job_ids: Sequence[str]) -> None:
    """Move to `translating` the running jobs (of `job_ids`) none of whose lots waits for vision.

    A job used to become `translating` only with its first translation batch: with the
    translator stopped or behind, a job whose every lot waited for translation read `processing`
    (stage `vision_analysis`) and sent on-call to the wrong stage.
    """
    if job_ids:
        execute(conn, "advance_jobs", sql.ADVANCE_DESCRIBED_JOBS, {"job_ids": sorted(set(job_ids))})


def _insert_batches(conn: Connection, envelopes: Sequence[Envelope],
                    event_type: type[VisionBatchSubmitted | TranslationBatchSubmitted], stage: str) -> None:
    batches = latest_envelopes(envelopes, event_type, lambda event: (event.batch_id,))
    events = [event_of(e, event_type) for e in batches]
    execute(conn, "insert_openai_batches", sql.INSERT_OPENAI_BATCHES, {"stage": stage, "rows": json_rows(
        {"batch_id": event.batch_id, "job_id": event.job_id, "shard_id": event.shard_id,
         "attempt": event.attempt, "lot_count": len(event.lot_ids), "created_at": envelope.occurred_at}
        for envelope, event in zip(batches, events, strict=True))})


def _store_descriptions(conn: Connection, events: Sequence[TranslationCompleted | LotFailed]) -> None:
    """The events' descriptions, COPYed when none of them is there yet (the usual case)."""
    texts = [(event.job_id, event.lot_id, language, html)
             for event in events for language, html in event.descriptions.items()]
    if not texts:
        return
    if not append(conn, "copy_descriptions", sql.COPY_DESCRIPTIONS, copy_texts(texts, 4)):
        execute(conn, "insert_descriptions", sql.INSERT_DESCRIPTIONS, {"rows": json_rows(
            {"job_id": job_id, "lot_id": lot_id, "language": language, "damages": html}
            for job_id, lot_id, language, html in texts)})


def _change(changes: JobChanges, job_id: str) -> JobChange:
    change = changes.get(job_id)
    if change is None:  # every row returned belongs to an event of this batch, which touched it
        raise LookupError(f"job {job_id} not touched by the batch")
    return change


def _add_images(changes: JobChanges, added: Iterable[Sequence[Any]]) -> None:
    """Count the images a statement returned per job (job id, images) on the jobs' changes."""
    for job_id, images in added:
        _change(changes, job_id).images_processed += images
