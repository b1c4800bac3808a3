"""Putting a batch on record: the metadata it carries, its event, then its shard row."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from lotlens_common.faults import fault_point
from lotlens_common.stage import metrics
from lotlens_common.stage.core.limits import check_metadata
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.work import LotWork

log = logging.getLogger(__name__)

METADATA_PREFIX = "lotlens_"
STAGE_KEY, JOB_KEY, SHARD_KEY = (f"{METADATA_PREFIX}{key}" for key in ("stage", "job_id", "shard_id"))


def batch_metadata(stage: str, job_id: str, shard_id: str, attempt: int) -> dict[str, str]:
    """The metadata every batch carries, so it can always be traced back to its shard."""
    return check_metadata({STAGE_KEY: stage, JOB_KEY: job_id, SHARD_KEY: shard_id,
                           f"{METADATA_PREFIX}attempt": str(attempt)})


async def put_on_record(stage: Stage[Any], shard_id: str, lots: Sequence[LotWork[Any]],
                        sent: tuple[str, ...], batch: Mapping[str, Any]) -> None:
    """Publish the BatchSubmitted event, then record the batch on its shard (in that order), with
    when OpenAI created it: the oldest batch's age (LotLensOpenAIBatchOverAge) is read from it.

    The shard's token estimate becomes its `sent` lots' here: the claim's counted every lot taken,
    and those that went back to the queue (out of their image checks' time, a file's overflow) held
    the budget of every job until the batch ended. Set with the batch, not at the requeue: a crash
    in between leaves the claim's estimate, too high until recovery records the batch, never low."""
    job_id, client_id, batch_id = lots[0].job_id, lots[0].client_id, str(batch["id"])
    attempt = max(lot.attempts for lot in lots)
    name = stage.spec.name
    stage.publisher.publish(client_id, [(f"{shard_id} {batch_id}", stage.spec.batch_submitted_event(
        job_id, shard_id, attempt, batch_id, sent))])
    fault_point(f"{name}.after_batch_published")
    created = batch.get("created_at")
    in_batch = set(sent)
    stage.store.record_batch(shard_id, batch_id, len(sent),
                             float(created) if isinstance(created, int | float) else None,
                             sum(stage.spec.estimate_tokens(lot) for lot in lots if lot.lot_id in in_batch))
    metrics.BATCHES_CREATED.labels(stage=name).inc()
    log.info("batch %s created for %d lots of job %s", batch_id, len(sent), job_id,
             extra={"job_id": job_id, "batch_id": batch_id, "shard_id": shard_id})
