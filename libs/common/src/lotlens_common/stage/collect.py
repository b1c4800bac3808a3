"""Watching batches and collecting their results, one event per lot.

Events are published before the lots are marked settled: a crash in between re-collects the
shard and publishes duplicates, which every consumer ignores (idempotent handlers).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry.context import Context

from lotlens_common.logs import log_context
from lotlens_common.model.batch_files import parse_batch_line
from lotlens_common.model.errors import (
    ModelError,
    ModelOutputError,
    ModelRequestError,
    ModelUnreachableError,
    client_reason,
)
from lotlens_common.model.response_text import response_error, response_failure
from lotlens_common.redaction import redacted
from lotlens_common.stage import metrics
from lotlens_common.stage.core import lifecycle
from lotlens_common.stage.core.outcomes import Kind, line_kind
from lotlens_common.stage.files import forget_file
from lotlens_common.stage.ports import KEY_REFUSED, QUOTA_EXHAUSTED, Shard, Stage
from lotlens_common.stage.release import carry_out
from lotlens_common.stage.settle import Settler
from lotlens_common.stage.traced import lots_span, openai_call, shard_context
from lotlens_common.stage.unreadable import RoundListing, look_up, readable
from lotlens_common.stage.work import LotWork

log = logging.getLogger(__name__)


class OutputNotReady(Exception):
    """A finished batch's output cannot be read yet (`lifecycle.for_missing_output`): the batch is
    collected in a later round, nothing of it settled now."""


LOGGED_UNANSWERED = 5  # a result file's unanswered lines logged one by one; the rest summed
# OpenAI's answer to a cancel of a batch that cannot be cancelled (finished, or finalizing).
CANNOT_CANCEL = 409
# Statuses a batch reaches only once OpenAI admitted it to the model's queue.
ADMITTED = frozenset({"in_progress", "finalizing", "completed", "expired"})


async def watch(stage: Stage[Any], after_collect: Callable[[], Awaitable[object]] | None = None) -> None:
    """Look at every submitted batch once; collect those that are finished.

    A failure with one batch is logged and counted, and the others are still looked at: one
    broken shard never holds up the rest of the stage. `after_collect` runs after each batch
    collected (the runner sends what became due meanwhile).
    """
    submitted = stage.store.shards("submitted")
    # A shard no longer submitted holds no pause: one released and carried out by another
    # instance (or collected by it) kept this one paused until it restarted.
    open_ids = {shard.shard_id for shard in submitted} | {KEY_REFUSED, QUOTA_EXHAUSTED}
    for shard_id in stage.unreadable.keys() - open_ids:
        del stage.unreadable[shard_id]
    cancelled = stage.store.cancelled_jobs([s.job_id for s in submitted])
    listing = RoundListing(stage)
    for shard in submitted:
        if stage.stopping.is_set():
            break
        try:
            status = await _watch_one(stage, shard, shard.job_id in cancelled, listing)
            if after_collect is not None and status in lifecycle.FINISHED:
                await after_collect()
        except Exception as exc:
            metrics.openai_error(stage.spec.name, "batches", exc)
            log.exception("watching batch %s failed; the next round tries again", shard.batch_id,
                          extra={"job_id": shard.job_id, "batch_id": shard.batch_id})


async def _watch_one(stage: Stage[Any], shard: Shard, cancelled: bool, listing: RoundListing) -> str | None:
    with log_context(job_id=shard.job_id, batch_id=shard.batch_id, shard_id=shard.shard_id):
        return await _watch_shard(stage, shard, cancelled, listing)


async def _watch_shard(stage: Stage[Any], shard: Shard, cancelled: bool, listing: RoundListing) -> str | None:
    """Read the batch first and take the shard's lock only to act on it: a running batch (the
    usual case, every poll) costs one read and no lock, re-read or commit of ours."""
    assert shard.batch_id is not None  # a submitted shard always has its batch
    if shard.release is not None:  # an operator's decision: the batch is not read again
        return await carry_out(stage, shard, cancelled)
    job_trace = shard_context(stage.store, shard)
    action = await _look(stage, shard, cancelled, job_trace, listing)
    if isinstance(action, lifecycle.TryLater | lifecycle.LookUp):
        return None
    if isinstance(action, lifecycle.Wait):
        if action.status != shard.batch_status:
            stage.store.note_batch_status(shard.shard_id, action.status)
        return action.status
    with stage.store.exclusive(shard.shard_id) as mine:
        current = stage.store.shard(shard.shard_id) if mine else None
        if current is None or current.status != "submitted":
            return None  # another instance is on it, or collected it since it was listed
        if isinstance(action, lifecycle.Cancel):
            log.warning("cancelling batch %s: %s", shard.batch_id, action.reason,
                        extra={"job_id": shard.job_id, "batch_id": shard.batch_id})
            batch = await ask_cancel(stage, shard.batch_id, job_trace)
            if batch["status"] not in lifecycle.FINISHED:
                stage.store.note_batch_status(shard.shard_id, str(batch["status"]))
                return str(batch["status"])
            action = lifecycle.Collect(batch)
        if isinstance(action, lifecycle.Lost):
            # Collected as given up: the files it names are read and then deleted like any
            # collected batch's (they stayed at OpenAI for their 30 days: customer data, storage).
            lost = {"code": "batch_lost", "message": action.reason}
            action = lifecycle.Collect({**(action.batch or {}), "id": shard.batch_id, "status": "lost",
                                        "errors": {"data": [lost]}})
        try:
            await collect(stage, shard, action.batch, cancelled)
        except OutputNotReady as wait:
            metrics.OUTPUT_AWAITED.labels(stage=stage.spec.name).inc()
            log.warning("batch %s: %s; next round", shard.batch_id, wait,
                        extra={"job_id": shard.job_id, "batch_id": shard.batch_id})
            return None
        return str(action.batch["status"])


async def ask_cancel(stage: Stage[Any], batch_id: str, job_trace: Context | None = None
                     ) -> Mapping[str, Any]:
    """Ask OpenAI to cancel the batch; the batch as it is after.

    A refused cancel (see `try_cancel`) is the batch's status, not a failure: it is read again and
    followed from there in the same round (raised, it was logged as an error and collected a
    poll later).
    """
    batch = await try_cancel(stage, batch_id, job_trace)
    if batch is not None:
        return batch
    with openai_call("batches.retrieve", {"lotlens.batch_id": batch_id}, job_trace):
        return await stage.batches.retrieve_batch(batch_id)


async def try_cancel(stage: Stage[Any], batch_id: str, job_trace: Context | None = None
                     ) -> Mapping[str, Any] | None:
    """Ask OpenAI to cancel the batch, once; the batch the cancel answered, or None if refused.

    OpenAI answers 409 for a batch it cannot cancel: one that finished since it was read, or one
    stuck in `finalizing`.
    """
    try:
        with openai_call("batches.cancel", {"lotlens.batch_id": batch_id}, job_trace):
            return await stage.batches.cancel_batch(batch_id)
    except ModelRequestError as exc:
        if exc.status_code != CANNOT_CANCEL:
            raise
        log.info("batch %s cannot be cancelled (%s)", batch_id, exc, extra={"batch_id": batch_id})
        return None


async def _look(stage: Stage[Any], shard: Shard, cancelled: bool, job_trace: Context | None,
                listing: RoundListing) -> (
        lifecycle.Wait | lifecycle.Cancel | lifecycle.Collect | lifecycle.Lost | lifecycle.LookUp
        | lifecycle.TryLater):
    """What to do with the shard's batch: read it by id, or find it by metadata when that fails."""
    assert shard.batch_id is not None
    try:
        with openai_call("batches.retrieve", {"lotlens.batch_id": shard.batch_id}, job_trace):
            batch = await stage.batches.retrieve_batch(shard.batch_id)
        readable(stage, shard)
        if batch.get("status") in ADMITTED:
            stage.store.note_queue_admitted(float(batch.get("created_at") or 0))
        return lifecycle.for_submitted(batch, cancelled, time.time(), stage.settings.max_batch_age_s)
    except ModelError as exc:
        metrics.openai_error(stage.spec.name, "batches", exc)
        read = lifecycle.for_read_error(getattr(exc, "status_code", None), str(exc))
    if isinstance(read, lifecycle.TryLater):
        log.warning("reading batch %s failed (%s); next round", shard.batch_id, read.reason)
        return read
    return await look_up(stage, shard, read, cancelled, job_trace, listing)


async def collect(stage: Stage[Any], shard: Shard, batch: Mapping[str, Any], cancelled: bool) -> None:
    """Read a finished batch's files and settle every lot of its shard."""
    lots = stage.store.shard_lots(shard.shard_id, stage.sent.pop(shard.shard_id, None))
    with lots_span(f"{stage.spec.name} batch collect", lots, shard.shard_id):
        await _collect(stage, shard, {lot.lot_id: lot for lot in lots}, batch, cancelled)


async def _collect(stage: Stage[Any], shard: Shard, pending: dict[str, LotWork[Any]],
                   batch: Mapping[str, Any], cancelled: bool) -> None:
    settler = Settler(stage, shard, cancelled)
    problems: list[str] = []
    if not batch.get("output_file_id"):
        _unless_output_due(stage, batch)
    for file_key in ("output_file_id", "error_file_id"):
        file_id = batch.get(file_key)
        if not file_id:
            continue
        try:
            with openai_call("files.content", {"lotlens.file_key": file_key}):
                unreadable = await _settle_lines(stage, shard, str(file_id), pending, settler)
        except ModelRequestError as exc:
            if exc.status_code != 404 and batch.get("status") != "lost":
                raise
            if exc.status_code == 404 and file_key == "output_file_id":
                _unless_output_due(stage, batch)  # read first: nothing of the batch is settled yet
            # Deleted (from the dashboard, say) or past its 30 days: the 404 failed the collection
            # every round and the job never finished. Nor may a batch given up on stay open over a
            # file it names that this key cannot read (403). Its lots go again below.
            metrics.openai_error(stage.spec.name, "files", exc)
            log.error("batch %s: its %s is gone: %s", shard.batch_id, file_key, exc,
                      extra={"job_id": shard.job_id, "batch_id": shard.batch_id})
            problems.append(f"its {file_key} {file_id} is gone")
            continue
        if unreadable:
            problems.append(f"{unreadable} of its result lines could not be read")
    reason = "; ".join([batch_reason(batch), *problems])
    if any(lifecycle.too_large(e.get("code"), str(e.get("message"))) for e in _errors(batch)):
        stage.shrink_files(stage.file_byte_limit(), reason, float(batch.get("created_at") or 0))
    unsent = batch.get("status") == "failed" and lifecycle.refused_whole(_errors(batch))
    _note_refusal(stage, batch)
    for lot in pending.values():
        settler.failed(lot, Kind.UNSENT if unsent else Kind.TRANSIENT, reason)
    settler.flush(str(batch["status"]))
    log.info("batch %s %s: collected", shard.batch_id, batch["status"],
             extra={"job_id": shard.job_id, "batch_id": shard.batch_id})
    # Nothing reads them again. Kept, every lot's request and answers (signed image URLs, the
    # descriptions) stayed at OpenAI for its 30 days: about 25 KB a lot, counted against the
    # project's storage limit, and customer data kept longer than the job needed.
    for file_key in ("input_file_id", "output_file_id", "error_file_id"):
        if file_id := batch.get(file_key):
            await forget_file(stage, str(file_id))


def _note_refusal(stage: Stage[Any], batch: Mapping[str, Any]) -> None:
    """A batch being collected that OpenAI's enqueued-token queue for the model refused: hold new
    batches back (`core/queue_hold.py`)."""
    if batch.get("status") != "failed" or not any(
            error.get("code") == "token_limit_exceeded" for error in _errors(batch)):
        return
    metrics.QUEUE_FULL.labels(stage=stage.spec.name).inc()
    hold = stage.store.note_queue_refused(float(batch.get("created_at") or 0))
    if hold is not None:
        log.warning("OpenAI's enqueued-token queue for %s is full (batch %s refused): no new batch "
                    "for %.0f s", stage.spec.model(), batch.get("id"), hold)


def _unless_output_due(stage: Stage[Any], batch: Mapping[str, Any]) -> None:
    """Raise OutputNotReady while the batch's missing output is still to be waited for."""
    if batch.get("status") == "lost":  # given up on by LotLens: nothing more is waited for
        return
    wait = lifecycle.for_missing_output(batch, time.time(), stage.settings.output_wait_s)
    if wait is not None:
        raise OutputNotReady(wait.reason)


async def _settle_lines(stage: Stage[Any], shard: Shard, file_id: str, pending: dict[str, LotWork[Any]],
                        settler: Settler) -> int:
    """Settle the pending lots a result file answers; how many of its lines could not be read."""
    unreadable = 0
    unanswered: Counter[str] = Counter()
    async for line in stage.batches.iter_file_lines(file_id):
        try:
            result = parse_batch_line(line)
        except ModelOutputError as exc:
            # Its lot stays pending and goes again: raising here failed the whole collection
            # every round, and the shard's job never finished.
            unreadable += 1
            metrics.openai_error(stage.spec.name, "files", exc)
            log.warning("batch %s: %s", shard.batch_id, exc, extra={"job_id": shard.job_id})
            continue
        lot = pending.pop(result.custom_id, None) if result is not None else None
        if result is None or lot is None:
            continue  # blank, settled earlier (re-collection after a crash) or not ours
        # OpenAI's words (they can name the model or the account) for the log and for finding a
        # refused image; the lot's reason, which its client reads, has only the type and code.
        words = result.error or "request failed"
        if result.body is not None:
            # A 200 line whose Response failed refusing an image (`failed_to_download_image`, …)
            # is such a refusal as an error line is: it failed the lot, the image unnamed.
            failure = response_error(result.body)
            changed = stage.spec.retry_refused(lot, *failure) if failure is not None else None
            if failure is not None and changed is not None:
                settler.refused(changed, client_reason("bad_request", failure[0]))
            elif failure is not None:
                # Logged as an error line is: read as an answer, each one logged its own warning.
                _unanswered(shard, lot, failure[1], f"failed response {failure[0]}", unanswered)
                settler.unusable(lot, result.body, response_failure(failure[0]))
            else:
                settler.succeeded(lot, result.body)
        elif (changed := stage.spec.retry_refused(lot, result.error_code, words)) is not None:
            settler.refused(changed, result.reason)
        else:
            kind = line_kind(result.status, result.error_code)
            if kind is Kind.UNSENT:
                # A request the model server refused (direct mode): counted as a round it refused
                # whole is, so LotLensOpenAIUnreachable sees a server that keeps refusing.
                metrics.openai_error(stage.spec.name, "batches", ModelUnreachableError(words))
            _unanswered(shard, lot, words, f"{kind.name.lower()} {result.error_code or result.status}",
                        unanswered)
            settler.failed(lot, kind, result.reason)
        if pending:  # the chunk of the shard's last lot is settled by its close (`Settler.flush`)
            settler.flush_if_full(len(pending))
    if sum(unanswered.values()) > LOGGED_UNANSWERED:
        log.warning("batch %s: %d lots got no answer in all (by kind and code: %s)", shard.batch_id,
                    sum(unanswered.values()), dict(unanswered.most_common(10)),
                    extra={"job_id": shard.job_id, "batch_id": shard.batch_id})
    return unreadable


def _unanswered(shard: Shard, lot: LotWork[Any], words: str, label: str, unanswered: Counter[str]) -> None:
    """Count a lot a result file gave no usable answer under `label` (its kind and code); log the
    first few in full, the rest go in one summary: a batch that failed whole wrote 50,000 lines.
    OpenAI's words can quote a signed image URL whole: its query is left out."""
    if sum(unanswered.values()) < LOGGED_UNANSWERED:
        log.warning("batch %s: lot %s got no answer: %s", shard.batch_id, lot.lot_id, redacted(words),
                    extra={"job_id": shard.job_id, "batch_id": shard.batch_id})
    unanswered[label] += 1


def batch_reason(batch: Mapping[str, Any]) -> str:
    """Why a batch's unanswered lots got no answer, as their clients may read it: the batch's error
    codes, not OpenAI's messages (`token_limit_exceeded`'s names the model and the organization)."""
    errors = _errors(batch)
    words = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors[:3])
    if batch.get("status") == "lost":  # given up on by LotLens: the words are its own
        detail = words
    else:
        if errors:
            log.warning("OpenAI batch %s ended %s: %s", batch.get("id"), batch.get("status"), words)
        detail = ", ".join(dict.fromkeys(str(e.get("code")) for e in errors[:3] if e.get("code")))
    return f"OpenAI batch {batch.get('id')} ended {batch.get('status')}" + (f" ({detail})" if detail else "")


def _errors(batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((batch.get("errors") or {}).get("data") or [])
