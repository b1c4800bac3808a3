"""The reconciler: batches at OpenAI that carry this stage's metadata but are not on record.

Recovery (`submit.recover_building`) covers the known gap, a builder dying between creating a
batch and recording it. The reconciler covers what no shard row explains: a batch whose shard
row is gone (a database restored from a backup, a row removed by hand) or a second batch made for
a shard that already has one. An orphan whose job still has waiting lots is adopted: those lots
join a shard under the batch's own shard id and are collected like any other, so the money spent
is not spent twice. A running duplicate is cancelled. Batches of jobs these tables have never
seen are left alone: another deployment may share the OpenAI organisation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from lotlens_common.stage import metrics, store
from lotlens_common.stage.collect import RUNNING
from lotlens_common.stage.runtime import StageRuntime
from lotlens_common.stage.submit import METADATA_PREFIX, put_on_record

log = logging.getLogger(__name__)

# The newest batches looked at per round (100 a page): older ones were seen by earlier rounds.
RECONCILE_PAGES = 10


async def reconcile(rt: StageRuntime) -> None:
    """Adopt orphan batches and cancel running duplicates of this stage."""
    stage_key = f"{METADATA_PREFIX}stage"
    listed = await rt.batches.find_batches({stage_key: rt.spec.name}, limit_pages=RECONCILE_PAGES)
    by_id = {str(batch["id"]): batch for batch in listed}
    with rt.engine.begin() as conn:
        unknown = set(by_id) - store.known_batches(conn, list(by_id))
    for batch_id in sorted(unknown):
        batch = by_id[batch_id]
        try:
            await _reconcile_one(rt, batch)
        except Exception:
            log.exception("reconciling batch %s failed; the next round tries again", batch_id,
                          extra={"batch_id": batch_id})


async def _reconcile_one(rt: StageRuntime, batch: Mapping[str, Any]) -> None:
    metadata = batch.get("metadata") or {}
    batch_id = str(batch["id"])
    shard_id = metadata.get(f"{METADATA_PREFIX}shard_id")
    job_id = metadata.get(f"{METADATA_PREFIX}job_id")
    if not shard_id or not job_id:
        return
    with store.exclusive(rt.engine, shard_id) as mine:
        if not mine:
            return  # its builder (or another reconciler) holds the shard
        with rt.engine.begin() as conn:
            if store.known_batches(conn, [batch_id]) or not store.job_known(conn, rt.spec.name, job_id):
                return  # recorded meanwhile, or another deployment's batch
            shard = store.shard(conn, shard_id)
        if shard is not None and shard.status == "building":
            return  # recovery adopts it by its metadata
        if shard is None:
            await _adopt(rt, batch, shard_id, job_id)
        else:
            await _cancel_duplicate(rt, batch, shard)


async def _adopt(rt: StageRuntime, batch: Mapping[str, Any], shard_id: str, job_id: str) -> None:
    batch_id = str(batch["id"])
    lot_ids = [str(orjson.loads(line)["custom_id"])
               async for line in rt.batches.iter_file_lines(str(batch["input_file_id"]))]
    with rt.engine.begin() as conn:
        lots = store.claim_named(conn, rt.spec.name, job_id, lot_ids, shard_id)
        if lots:
            store.create_shard(conn, rt.spec.name, shard_id, lots,
                               sum(rt.spec.estimate_tokens(lot) for lot in lots))
    if not lots:
        # Every lot it holds is settled or in another batch: it can only spend twice.
        await _cancel_duplicate(rt, batch, None)
        return
    log.warning("adopting batch %s (%d lots of job %s) that no shard row knew", batch_id, len(lots),
                job_id, extra={"job_id": job_id, "batch_id": batch_id, "shard_id": shard_id})
    await put_on_record(rt, shard_id, lots, tuple(lot.lot_id for lot in lots), batch_id)
    metrics.BATCHES_RECONCILED.labels(stage=rt.spec.name, action="adopted").inc()


async def _cancel_duplicate(rt: StageRuntime, batch: Mapping[str, Any], shard: store.Shard | None) -> None:
    batch_id = str(batch["id"])
    if batch.get("status") not in RUNNING - {"cancelling"}:
        return  # finished or already stopping: nothing left to save
    log.warning("cancelling batch %s: its lots are on record elsewhere (shard %s, batch %s)", batch_id,
                shard.shard_id if shard else "-", shard.batch_id if shard else "-",
                extra={"batch_id": batch_id})
    await rt.batches.cancel_batch(batch_id)
    metrics.BATCHES_RECONCILED.labels(stage=rt.spec.name, action="cancelled").inc()
