"""Putting a batch on record: the metadata it carries, its event, then its shard row; and the hold
on new batches while one the stage created is not on record.

Kafka refusing the BatchSubmitted (down, an ACL, too few in-sync replicas) leaves the shard
`building`, and recovery adopts its batch later (found by its metadata): nothing is lost or paid
twice. But each round went on to claim the next due job and create its batch too, which could not
be recorded either: over an hour's outage the batches OpenAI ran and billed, with no event telling
of them, grew with every round. So the first such batch holds new ones back, in this process
(`Stage.held_shard`), until it is put on record (recovery tries it first at each watch, and only
it), or its shard is no longer `building` (another instance recorded it) or has no batch. A
restarted process recovers its building shards before its first flush, those whose create was
asked first, so it meets the refusal before it builds any. An event Kafka refuses for what it is
(`ports.EventsRefused`: over the producer's size limit, an invalid record) holds nothing: refused
again at every try whatever else Kafka takes, it held the stage for good, with no command to end the
hold; its shard fails at each watch instead (LotLensStageRoundsFailing). A broker refusing it for
its size holds: every event is under the producer's limit, so that is the topic's limit set lower,
which clears once it is set back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from lotlens_common.faults import fault_point
from lotlens_common.stage import metrics
from lotlens_common.stage.core.limits import check_metadata
from lotlens_common.stage.ports import EventsRefused, Stage
from lotlens_common.stage.work import LotWork

log = logging.getLogger(__name__)

METADATA_PREFIX = "lotlens_"
STAGE_KEY, JOB_KEY, SHARD_KEY = (f"{METADATA_PREFIX}{key}" for key in ("stage", "job_id", "shard_id"))


def batch_metadata(stage: str, job_id: str, shard_id: str, attempt: int) -> dict[str, str]:
    """The metadata every batch carries, so it can always be traced back to its shard."""
    return check_metadata({STAGE_KEY: stage, JOB_KEY: job_id, SHARD_KEY: shard_id,
                           f"{METADATA_PREFIX}attempt": str(attempt)})


async def put_on_record(stage: Stage[Any], shard_id: str, lots: Sequence[LotWork[Any]],
                        sent: tuple[str, ...], batch: Mapping[str, Any]) -> bool:
    """Publish the BatchSubmitted event, then record the batch on its shard (in that order), with
    when OpenAI created it: the oldest batch's age (LotLensOpenAIBatchOverAge) is read from it.
    Whether this call recorded it (a batch not recorded here is counted by the recovery that does).

    The shard's token estimate becomes its `sent` lots' here: the claim's counted every lot taken,
    and those that went back to the queue (out of their image checks' time, a file's overflow) held
    the budget of every job until the batch ended. Set with the batch, not at the requeue: a crash
    in between leaves the claim's estimate, too high until recovery records the batch, never low.

    Only while this process holds the shard's lock, and only a `building` shard: a lock gone with
    its PostgreSQL session leaves the shard to another instance's recovery, which may have recorded
    and collected it before a record of ours, late, set it back to `submitted`."""
    job_id, client_id, batch_id = lots[0].job_id, lots[0].client_id, str(batch["id"])
    attempt = max(lot.attempts for lot in lots)
    name = stage.spec.name
    created = batch.get("created_at")
    in_batch = set(sent)
    tokens = sum(stage.spec.estimate_tokens(lot) for lot in lots if lot.lot_id in in_batch)
    if not stage.store.holds(shard_id):
        _left(stage, shard_id, batch_id, "this process lost its lock")  # not published: no late copy
        return False
    try:
        stage.publisher.publish(client_id, [(f"{shard_id} {batch_id}", stage.spec.batch_submitted_event(
            job_id, shard_id, attempt, batch_id, sent))])
        fault_point(f"{name}.after_batch_published")
        recorded = stage.store.record_batch(shard_id, batch_id, len(sent),
                                            float(created) if isinstance(created, int | float) else None,
                                            tokens, str(batch["status"]) if batch.get("status") else None)
    except Exception as exc:
        _hold(stage, shard_id, batch_id, exc)
        raise
    if not recorded:
        _left(stage, shard_id, batch_id, "it is no longer building")
        if stage.held_shard == shard_id:
            end_hold(stage, "is no longer building (another instance recorded its batch, or closed it)")
        return False
    if stage.held_shard == shard_id:
        end_hold(stage, f"has its batch {batch_id} on record")
    metrics.BATCHES_CREATED.labels(stage=name).inc()
    log.info("batch %s created for %d lots of job %s", batch_id, len(sent), job_id,
             extra={"job_id": job_id, "batch_id": batch_id, "shard_id": shard_id})
    return True


def _left(stage: Stage[Any], shard_id: str, batch_id: str, why: str) -> None:
    """The shard is recovery's now (this or another instance's records the batch, or did): no record
    here, and no hold, as no refusal keeps it off the record."""
    log.warning("%s batch %s of shard %s is not put on record by this call: %s; recovery (this or "
                "another instance) records it, or did", stage.spec.name, batch_id, shard_id, why,
                extra={"batch_id": batch_id, "shard_id": shard_id})


def _hold(stage: Stage[Any], shard_id: str, batch_id: str, exc: Exception) -> None:
    """Hold new batches back: the shard's batch exists and is not on record (logged once, when
    the hold begins; each failed try is counted by its caller as a round failure). Not for an
    event refused for what it is: that ends a hold on its shard."""
    if isinstance(exc, EventsRefused):
        if stage.held_shard == shard_id:
            end_hold(stage, f"has its record refused for good ({exc})")
        return
    if stage.held_shard is not None:
        return
    log.error("batch %s of shard %s could not be put on record (%s): the %s stage creates no batch "
              "until it is; recovery tries again at each watch", batch_id, shard_id, exc, stage.spec.name,
              extra={"batch_id": batch_id, "shard_id": shard_id})
    stage.held_shard = shard_id


def end_hold(stage: Stage[Any], why: str) -> None:
    """End the hold, if there is one (logged): its shard `why`."""
    shard_id, stage.held_shard = stage.held_shard, None
    if shard_id is not None:
        log.warning("shard %s %s: the %s stage creates batches again", shard_id, why, stage.spec.name,
                    extra={"shard_id": shard_id})
