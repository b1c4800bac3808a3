"""The reconciler: batches at OpenAI that carry this stage's metadata but are not on record.

Recovery (`recover.recover_building`) covers the known gap, a builder dying between creating a
batch and recording it. The reconciler covers what no shard row explains: a batch whose shard
row is gone (a database restored from a backup, a row removed by hand) or a second batch made for
a shard that already has one (e.g. the SDK retrying `batches.create` after a lost answer). An
orphan whose job still has waiting lots is adopted: those lots join a shard under the batch's own
shard id and are collected like any other, so the money spent is not spent twice. A running
duplicate is cancelled. Batches of jobs these tables have never seen are left alone: another
deployment may share the OpenAI organisation. So is an orphan whose input file is gone (LotLens
deletes it at collection), and one whose lots are all settled elsewhere; the process remembers
both, so their input files are not downloaded every minute. A duplicate is asked to cancel once:
the process remembers it too, whether OpenAI accepted the cancel or refused it (409: finished, or
stuck `finalizing`), and the metric counts only the cancels OpenAI accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from lotlens_common.model.errors import ModelRequestError
from lotlens_common.stage import metrics
from lotlens_common.stage.collect import try_cancel
from lotlens_common.stage.core import lifecycle
from lotlens_common.stage.key import LISTING, key_accepted
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.record import JOB_KEY, SHARD_KEY, STAGE_KEY, put_on_record

log = logging.getLogger(__name__)

# The newest batches looked at per round (100 a page): older ones were seen by earlier rounds.
RECONCILE_PAGES = 10


async def reconcile(stage: Stage[Any]) -> None:
    """Adopt orphan batches and cancel running duplicates of this stage."""
    listed = await stage.batches.find_batches({STAGE_KEY: stage.spec.name}, limit_pages=RECONCILE_PAGES)
    # The listing worked with the key: a pause begun by a refused listing ends here. Recovery
    # ends the others, but only when a shard is `building`; a pause begun by a refused listing,
    # with none building (the quiet case), lasted until the process restarted.
    key_accepted(stage, LISTING)
    by_id = {str(batch["id"]): batch for batch in listed}
    stage.left_orphans &= by_id.keys()  # what the listing no longer shows is never looked at again
    unknown = set(by_id) - stage.store.known_batches(list(by_id)) - stage.left_orphans
    for batch_id in sorted(unknown):
        try:
            await _reconcile_one(stage, by_id[batch_id])
        except Exception:
            log.exception("reconciling batch %s failed; the next round tries again", batch_id,
                          extra={"batch_id": batch_id})


async def _reconcile_one(stage: Stage[Any], batch: Mapping[str, Any]) -> None:
    metadata = batch.get("metadata") or {}
    shard_id, job_id = metadata.get(SHARD_KEY), metadata.get(JOB_KEY)
    if not shard_id or not job_id:
        return
    with stage.store.exclusive(shard_id) as mine:
        if not mine or stage.store.known_batches([str(batch["id"])]):
            return  # its builder (or another reconciler) holds the shard, or it was recorded meanwhile
        shard = stage.store.shard(shard_id)
        action = lifecycle.for_unknown_batch(batch, shard.status if shard else None,
                                             stage.store.job_known(job_id))
        if isinstance(action, lifecycle.Adopt):
            await _adopt(stage, batch, shard_id, job_id)
        elif isinstance(action, lifecycle.CancelDuplicate):
            await _cancel(stage, batch)


async def _adopt(stage: Stage[Any], batch: Mapping[str, Any], shard_id: str, job_id: str) -> None:
    batch_id, file_id = str(batch["id"]), str(batch["input_file_id"])
    try:
        lot_ids = [str(orjson.loads(line)["custom_id"])
                   async for line in stage.batches.iter_file_lines(file_id)]
    except ModelRequestError as exc:
        if exc.status_code != 404:
            raise
        # Deleted when its batch was collected (this row lost since, e.g. by a restore from a
        # backup), or past its 30 days: which lots it holds cannot be known, so it cannot be adopted.
        log.warning("batch %s no shard row knows is left alone: its input file %s is gone (%s)",
                    batch_id, file_id, exc, extra={"job_id": job_id, "batch_id": batch_id})
        stage.left_orphans.add(batch_id)
        return
    lots = stage.store.claim_named(job_id, lot_ids, shard_id,
                                   lambda claimed: sum(map(stage.spec.estimate_tokens, claimed)))
    if not lots:
        # Every lot it holds is settled or in another batch: it can only spend twice.
        if isinstance(lifecycle.for_duplicate(batch), lifecycle.CancelDuplicate):
            await _cancel(stage, batch)
        stage.left_orphans.add(batch_id)
        return
    log.warning("adopting batch %s (%d lots of job %s) that no shard row knew", batch_id, len(lots),
                job_id, extra={"job_id": job_id, "batch_id": batch_id, "shard_id": shard_id})
    if await put_on_record(stage, shard_id, lots, tuple(lot.lot_id for lot in lots), batch):
        # Only if recorded here: one left to recovery (the lock gone, the shard no longer building)
        # is counted as created by the recovery that records it; counted here too, it counted twice.
        metrics.BATCHES_RECONCILED.labels(stage=stage.spec.name, action="adopted").inc()


async def _cancel(stage: Stage[Any], batch: Mapping[str, Any]) -> None:
    """Ask OpenAI once to cancel a duplicate; counted only if it accepted.

    Asked or refused, the batch is left alone afterwards: asking again changes nothing (one that
    accepted is stopping, one that refused has finished or is finalizing), and one stuck
    `finalizing` was asked again, and counted as cancelled, every minute the listing showed it.
    """
    batch_id = str(batch["id"])
    log.warning("cancelling batch %s: its lots are on record elsewhere", batch_id,
                extra={"batch_id": batch_id})
    accepted = await try_cancel(stage, batch_id) is not None
    stage.left_orphans.add(batch_id)
    if accepted:
        metrics.BATCHES_RECONCILED.labels(stage=stage.spec.name, action="cancelled").inc()
    log.info("duplicate batch %s %s: left alone, its cancel is not asked again", batch_id,
             "is cancelling" if accepted else "refused the cancel", extra={"batch_id": batch_id})
