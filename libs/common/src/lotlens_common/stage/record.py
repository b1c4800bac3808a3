"""Putting a batch on record: the metadata it carries, its event, then its shard row; and the hold
on new batches while one the stage created is not on record.

Kafka refusing the BatchSubmitted (down, an ACL, too few in-sync replicas) leaves the shard
`building`, and recovery adopts its batch later (found by its metadata): nothing is lost or paid
twice. But each round went on to claim the next due job and create its batch too, which could not
be recorded either: over an hour's outage the batches OpenAI ran and billed, with no event telling
of them, grew with every round. So the first such batch holds new ones back, in this process,
until a batch is put on record (recovery's adoption of that one, at each watch, is the try), or its
shard is no longer `building` (another instance recorded it). A restarted process recovers its
building shards before its first flush, and meets the refusal there first.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from lotlens_common.faults import fault_point
from lotlens_common.stage import metrics
from lotlens_common.stage.core.limits import check_metadata
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.work import LotWork

log = logging.getLogger(__name__)

METADATA_PREFIX = "lotlens_"
STAGE_KEY, JOB_KEY, SHARD_KEY = (f"{METADATA_PREFIX}{key}" for key in ("stage", "job_id", "shard_id"))
# The `Stage.unreadable` entry of the hold (`quota.may_build`): "<shard id>: <why>", of the shard
# whose batch is not on record.
UNRECORDED = "a batch is not on record"


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
    created = batch.get("created_at")
    in_batch = set(sent)
    tokens = sum(stage.spec.estimate_tokens(lot) for lot in lots if lot.lot_id in in_batch)
    try:
        stage.publisher.publish(client_id, [(f"{shard_id} {batch_id}", stage.spec.batch_submitted_event(
            job_id, shard_id, attempt, batch_id, sent))])
        fault_point(f"{name}.after_batch_published")
        stage.store.record_batch(shard_id, batch_id, len(sent),
                                 float(created) if isinstance(created, int | float) else None, tokens)
    except Exception as exc:
        _hold(stage, shard_id, batch_id, exc)
        raise
    if stage.unreadable.pop(UNRECORDED, None) is not None:
        log.warning("batch %s is on record: the %s stage creates batches again", batch_id, name,
                    extra={"job_id": job_id, "batch_id": batch_id, "shard_id": shard_id})
    metrics.BATCHES_CREATED.labels(stage=name).inc()
    log.info("batch %s created for %d lots of job %s", batch_id, len(sent), job_id,
             extra={"job_id": job_id, "batch_id": batch_id, "shard_id": shard_id})


def _hold(stage: Stage[Any], shard_id: str, batch_id: str, exc: Exception) -> None:
    """Hold new batches back: the shard's batch exists and is not on record (logged once, when
    the hold begins; each failed try is counted by its caller as a round failure)."""
    if UNRECORDED in stage.unreadable:
        return
    log.error("batch %s of shard %s could not be put on record (%s): the %s stage creates no batch "
              "until it is; recovery tries again at each watch", batch_id, shard_id, exc, stage.spec.name,
              extra={"batch_id": batch_id, "shard_id": shard_id})
    stage.unreadable[UNRECORDED] = f"{shard_id}: {exc}"


def end_hold_but(stage: Stage[Any], shard_ids: Collection[str]) -> None:
    """End the hold unless its shard is among `shard_ids`, those whose batch may not be on record
    (`building`, and not found to have none): another instance recorded it, or it was closed, or
    no batch of it exists (held on, the hold kept that shard from being built again, for good)."""
    shard_id = held_shard(stage)
    if shard_id is None or shard_id in shard_ids:
        return
    del stage.unreadable[UNRECORDED]
    log.warning("shard %s holds no batch left to put on record: the %s stage creates batches again",
                shard_id, stage.spec.name, extra={"shard_id": shard_id})


def held_shard(stage: Stage[Any]) -> str | None:
    """The shard whose batch is not on record, if one holds new batches back."""
    held = stage.unreadable.get(UNRECORDED)
    return None if held is None else held.split(":", 1)[0]
