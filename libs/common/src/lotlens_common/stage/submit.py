"""Sending shards: claim waiting lots, write the JSONL, create the batch, put it on record.

Order of effects, and why: the shard row (with its lots) is committed first; the batch is created
with metadata naming the shard; the BatchSubmitted event is published; only then is the batch id
written to the shard row. A crash anywhere leaves a `building` shard, and recovery looks the
batch up by its metadata before creating anything, so no batch is lost and none is paid twice.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from pathlib import Path
from typing import Any

from lotlens_common.clock import utc_now
from lotlens_common.faults import fault_point
from lotlens_common.stage import metrics, store
from lotlens_common.stage.direct import run_direct
from lotlens_common.stage.jsonl import JsonlWriter
from lotlens_common.stage.rule import affordable, plan_flushes
from lotlens_common.stage.runtime import StageRuntime
from lotlens_common.stage.spec import LotWork

log = logging.getLogger(__name__)

METADATA_PREFIX = "lotlens_"
PREPARE_CHUNK = 1000


def batch_metadata(stage: str, job_id: str, shard_id: str, attempt: int) -> dict[str, str]:
    """The metadata every batch carries, so it can always be traced back to its shard."""
    return {f"{METADATA_PREFIX}stage": stage, f"{METADATA_PREFIX}job_id": job_id,
            f"{METADATA_PREFIX}shard_id": shard_id, f"{METADATA_PREFIX}attempt": str(attempt)}


async def flush_due(rt: StageRuntime) -> int:
    """Send every shard the batching rule says is due; the number of shards sent."""
    with rt.engine.begin() as conn:
        jobs = store.waiting_jobs(conn, rt.spec.name)
        enqueued = store.tokens_enqueued(conn, rt.spec.name)
    limit = rt.settings.enqueued_token_limit
    plan = plan_flushes(jobs, utc_now(), rt.settings.window_s, rt.settings.max_requests_per_batch,
                        enqueued, limit) if jobs else []
    budget = limit - enqueued if limit else None
    sent = 0
    for flush in plan:
        shard_id = f"{rt.spec.name}-{uuid.uuid4().hex}"
        with store.exclusive(rt.engine, shard_id):
            with rt.engine.begin() as conn:
                lots = store.claim(conn, rt.spec.name, flush.job_id, flush.lots, shard_id)
                # The plan counts lots; the budget counts each lot's own estimate.
                costs = [rt.spec.estimate_tokens(lot) for lot in lots]
                fit = affordable(costs, budget, nothing_enqueued=budget == limit)
                store.unclaim(conn, rt.spec.name, flush.job_id, [lot.lot_id for lot in lots[fit:]])
                lots, tokens = lots[:fit], sum(costs[:fit])
                if not lots:
                    break
                store.create_shard(conn, rt.spec.name, shard_id, lots, tokens)
            if budget is not None:
                budget -= tokens
            fault_point(f"{rt.spec.name}.after_shard_claimed")
            try:
                await _build_and_submit(rt, shard_id, lots, recovering=False)
            except Exception:
                # The shard stays `building`: recovery finds or rebuilds its batch later.
                log.exception("sending shard %s of job %s failed", shard_id, flush.job_id,
                              extra={"job_id": flush.job_id, "shard_id": shard_id})
                continue
            sent += 1
    return sent


async def recover_building(rt: StageRuntime) -> None:
    """Finish shards whose builder died: adopt their batch if it exists, else build it again."""
    with rt.engine.begin() as conn:
        building = store.shards(conn, rt.spec.name, "building")
    for shard in building:
        with store.exclusive(rt.engine, shard.shard_id) as mine:
            if not mine:
                continue  # its builder is alive
            with rt.engine.begin() as conn:
                if store.shard_status(conn, shard.shard_id) != "building":
                    continue  # finished by another instance meanwhile
                lots = store.shard_lots(conn, rt.spec.name, shard.shard_id)
                if not lots:
                    store.close_shard(conn, shard.shard_id, "empty", None)
                    continue
            log.warning("recovering shard %s of job %s", shard.shard_id, shard.job_id,
                        extra={"job_id": shard.job_id, "shard_id": shard.shard_id})
            try:
                await _build_and_submit(rt, shard.shard_id, lots, recovering=True)
            except Exception:
                log.exception("recovering shard %s failed; the next round tries again", shard.shard_id,
                              extra={"job_id": shard.job_id, "shard_id": shard.shard_id})


async def _build_and_submit(rt: StageRuntime, shard_id: str, lots: list[LotWork],
                            recovering: bool) -> None:
    job_id = lots[0].job_id
    existing = (await rt.batches.find_batches({f"{METADATA_PREFIX}shard_id": shard_id})
                if recovering else [])
    if existing:
        await put_on_record(rt, shard_id, lots, tuple(lot.lot_id for lot in lots),
                            str(existing[0]["id"]))
        return
    shard = store.Shard(shard_id, job_id, lots[0].client_id, max(lot.attempts for lot in lots),
                        "building", None, None)
    folder = rt.settings.work_dir or tempfile.gettempdir()
    writer = JsonlWriter(Path(folder) / f"{shard_id}.jsonl", rt.settings.max_batch_bytes)
    try:
        # Chunk by chunk, so a 50,000-request shard never holds all its request bodies at once.
        for start in range(0, len(lots), PREPARE_CHUNK):
            requests = await _prepare(rt, lots[start:start + PREPARE_CHUNK])
            if rt.direct is not None:
                await run_direct(rt, rt.direct, shard, requests)
            else:
                writer.write(requests)
        with rt.engine.begin() as conn:
            store.set_status(conn, rt.spec.name, job_id, writer.overflow, store.WAITING)
            if rt.direct is not None or not writer.written:
                store.close_shard(conn, shard_id, "collected" if rt.direct else "empty", None)
                return
        file_id = await rt.batches.upload_batch_file(writer.close())
    finally:
        writer.discard()
    batch = await rt.batches.create_batch(
        file_id, batch_metadata(rt.spec.name, job_id, shard_id, shard.attempt))
    fault_point(f"{rt.spec.name}.after_batch_created")
    await put_on_record(rt, shard_id, lots, tuple(writer.written), str(batch["id"]))


async def _prepare(rt: StageRuntime, lots: list[LotWork]) -> list[tuple[LotWork, dict[str, Any]]]:
    """Requests for the lots that need the model; the others are settled here and now."""
    prepared = await rt.spec.prepare(lots)
    rt.publish_events(lots[0].client_id, [event for _, event in prepared.settled])
    # Only what preparation changed is written: rewriting every claimed row's work doubled the
    # rows the claim had just written (a quarter of a 20,000-lot shard's submit time).
    claimed = {lot.lot_id: lot.work for lot in lots}
    changed = [lot for lot, _ in prepared.requests if lot.work != claimed[lot.lot_id]]
    with rt.engine.begin() as conn:
        store.set_status(conn, rt.spec.name, lots[0].job_id,
                         [lot.lot_id for lot, _ in prepared.settled], store.DONE)
        store.save_work(conn, rt.spec.name, changed)
    return prepared.requests


async def put_on_record(rt: StageRuntime, shard_id: str, lots: list[LotWork],
                        sent: tuple[str, ...], batch_id: str) -> None:
    """Publish the BatchSubmitted event, then record the batch on its shard (in that order)."""
    job_id, client_id = lots[0].job_id, lots[0].client_id
    attempt = max(lot.attempts for lot in lots)
    event = rt.spec.batch_submitted_event(job_id, shard_id, attempt, batch_id, sent)
    rt.publish_events(client_id, [event])
    fault_point(f"{rt.spec.name}.after_batch_published")
    with rt.engine.begin() as conn:
        store.record_batch(conn, shard_id, batch_id, len(sent))
    metrics.BATCHES_CREATED.labels(stage=rt.spec.name).inc()
    log.info("batch %s created for %d lots of job %s", batch_id, len(sent), job_id,
             extra={"job_id": job_id, "batch_id": batch_id, "shard_id": shard_id})
