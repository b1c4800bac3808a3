"""Watching batches and collecting their results, one event per lot.

Events are published before the lots are marked settled: a crash in between re-collects the
shard and publishes duplicates, which every consumer ignores (idempotent handlers).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lotlens_common.events import Event
from lotlens_common.model.batch_files import parse_batch_lines
from lotlens_common.model.errors import ModelOutputError, ModelRequestError
from lotlens_common.stage import metrics, store
from lotlens_common.stage.runtime import StageRuntime
from lotlens_common.stage.spec import LotWork

log = logging.getLogger(__name__)

RUNNING = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
CHUNK = 1000


async def watch(rt: StageRuntime) -> None:
    """Look at every submitted batch once; collect those that are finished.

    A failure with one batch is logged and counted, and the others are still looked at: one
    broken shard never holds up the rest of the stage.
    """
    with rt.engine.begin() as conn:
        submitted = store.shards(conn, rt.spec.name, "submitted")
        cancelled = store.cancelled_jobs(conn, rt.spec.name, {s.job_id for s in submitted})
    by_status: dict[str, int] = {}
    for shard in submitted:
        try:
            status = await _watch_one(rt, shard, shard.job_id in cancelled)
        except Exception as exc:
            metrics.openai_error(rt.spec.name, "batches", exc)
            log.exception("watching batch %s failed; next round retries", shard.batch_id,
                          extra={"job_id": shard.job_id, "batch_id": shard.batch_id})
            continue
        if status:
            by_status[status] = by_status.get(status, 0) + 1
    for status in {*metrics.BATCH_STATUSES, *by_status}:
        metrics.BATCHES_BY_STATUS.labels(stage=rt.spec.name, status=status).set(by_status.get(status, 0))


async def _watch_one(rt: StageRuntime, shard: store.Shard, cancelled: bool) -> str | None:
    assert shard.batch_id is not None  # a submitted shard always has its batch
    with store.exclusive(rt.engine, shard.shard_id) as mine:
        if not mine:
            return None  # another instance is on it
        with rt.engine.begin() as conn:
            if store.shard_status(conn, shard.shard_id) != "submitted":
                return None  # collected by another instance since it was listed
        batch = await _retrieve(rt, shard.batch_id)
        status = str(batch["status"])
        if cancelled and status in RUNNING - {"cancelling"}:
            batch = await rt.batches.cancel_batch(shard.batch_id)
            status = str(batch["status"])
        if status in RUNNING:
            if status != shard.batch_status:
                with rt.engine.begin() as conn:
                    store.note_batch_status(conn, shard.shard_id, status)
            return status
        await _collect(rt, shard, batch, cancelled)
        return status


async def _retrieve(rt: StageRuntime, batch_id: str) -> Mapping[str, Any]:
    """The batch; one OpenAI no longer knows (404) counts as failed, so its lots are resubmitted."""
    try:
        return await rt.batches.retrieve_batch(batch_id)
    except ModelRequestError as exc:
        if exc.status_code != 404:
            raise
        return {"id": batch_id, "status": "failed",
                "errors": {"data": [{"code": "batch_not_found", "message": str(exc)}]}}


async def _collect(rt: StageRuntime, shard: store.Shard, batch: Mapping[str, Any],
                   cancelled: bool) -> None:
    with rt.engine.begin() as conn:
        pending = {lot.lot_id: lot for lot in store.shard_lots(conn, rt.spec.name, shard.shard_id)}
    collector = Collector(rt, shard, cancelled)
    for file_key in ("output_file_id", "error_file_id"):
        file_id = batch.get(file_key)
        if not file_id:
            continue
        async for line in rt.batches.iter_file_lines(str(file_id)):
            for result in parse_batch_lines([line]):
                lot = pending.pop(result.custom_id, None)
                if lot is None:
                    continue  # settled earlier (re-collection after a crash) or not ours
                if result.body is not None:
                    collector.succeeded(lot, result.body)
                else:
                    collector.retry(lot, result.error or "request failed")
            collector.flush_if_full()
    reason = _batch_reason(batch)
    for lot in pending.values():
        collector.retry(lot, reason)
    collector.flush()
    with rt.engine.begin() as conn:
        store.close_shard(conn, shard.shard_id, "collected", str(batch["status"]))
    log.info("batch %s %s: collected", shard.batch_id, batch["status"],
             extra={"job_id": shard.job_id, "batch_id": shard.batch_id})


def _batch_reason(batch: Mapping[str, Any]) -> str:
    errors = (batch.get("errors") or {}).get("data") or []
    detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors[:3])
    return f"OpenAI batch {batch.get('id')} ended {batch.get('status')}" + (f" ({detail})" if detail else "")


class Collector:
    """Accumulates a shard's outcomes and applies them chunk by chunk (batch and direct modes)."""

    def __init__(self, rt: StageRuntime, shard: store.Shard, cancelled: bool) -> None:
        self.rt, self.shard, self.cancelled = rt, shard, cancelled
        self.events: list[Event] = []
        self.done: list[str] = []
        self.failed: list[str] = []
        self.again: dict[str, list[str]] = {}
        self.given_up: list[str] = []

    def succeeded(self, lot: LotWork, body: Mapping[str, Any]) -> None:
        """A response body arrived for the lot."""
        try:
            self.events.append(self.rt.spec.result_event(lot, body))
            self.done.append(lot.lot_id)
        except ModelOutputError as exc:
            # The model answered but the answer is unusable (e.g. cut off): a retry costs the
            # same and most likely ends the same, so the lot fails with the reason.
            self.events.append(self.rt.spec.failure_event(lot, str(exc)))
            self.failed.append(lot.lot_id)

    def retry(self, lot: LotWork, reason: str) -> None:
        """The lot got no usable answer: send it again, or give up after the last attempt."""
        if self.cancelled:
            self.given_up.append(lot.lot_id)
        elif lot.attempts >= self.rt.settings.max_attempts:
            self.events.append(self.rt.spec.failure_event(
                lot, f"{reason} (gave up after {lot.attempts} attempts)"))
            self.failed.append(lot.lot_id)
        else:
            self.again.setdefault(reason, []).append(lot.lot_id)

    def flush_if_full(self) -> None:
        """Apply what has accumulated once a chunk is full."""
        if len(self.events) + sum(map(len, self.again.values())) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        """Publish the events, then record the lots' new statuses."""
        name, job_id = self.rt.spec.name, self.shard.job_id
        self.rt.publish_events(self.shard.client_id, self.events)
        with self.rt.engine.begin() as conn:
            store.set_status(conn, name, job_id, self.done, store.DONE)
            store.set_status(conn, name, job_id, self.failed, store.FAILED)
            store.set_status(conn, name, job_id, self.given_up, store.CANCELLED)
            for reason, lot_ids in self.again.items():
                store.set_status(conn, name, job_id, lot_ids, store.WAITING, reason)
        metrics.LOT_RESULTS.labels(stage=name, outcome="done").inc(len(self.done))
        metrics.LOT_RESULTS.labels(stage=name, outcome="failed").inc(len(self.failed))
        metrics.LOT_RESULTS.labels(stage=name, outcome="retried").inc(sum(map(len, self.again.values())))
        self.events, self.done, self.failed, self.again, self.given_up = [], [], [], {}, []
