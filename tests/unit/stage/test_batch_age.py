"""The oldest batch's age (LotLensOpenAIBatchOverAge reads it) is its batch's at OpenAI, not its
shard's: a shard claimed long before its batch was made (sends refused for the quota over a
weekend) is not old, and an old batch adopted into a new shard is (in-memory ports)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from lotlens_common.model.errors import ModelTimeoutError, ModelUnavailableError
from lotlens_common.stage.reconcile import reconcile
from tests.unit.stage.conftest import World, lots

HOURS_21 = 21 * 3600
ALERT_S = 72_000  # LotLensOpenAIBatchOverAge: 20 h


def test_a_batch_created_now_for_a_shard_claimed_21_hours_ago_is_not_over_age(world: World) -> None:
    world.batches.finish, world.batches.created_at = None, time.time()
    world.batches.errors["upload"] = [ModelUnavailableError("502")]  # its send fails; it stays building
    world.store.add(lots(2))
    world.rounds()
    [shard] = world.store.shards("building")
    world.store.shards_by_id[shard.shard_id] = replace(shard, created_at=time.time() - HOURS_21)
    world.rounds()  # sent again now, 21 h after its lots were claimed
    assert world.store.shard(shard.shard_id).status == "submitted"  # type: ignore[union-attr]
    assert world.store.oldest_submitted_age_s() < ALERT_S


def test_a_batch_created_21_hours_ago_adopted_by_the_reconciler_reads_its_own_age(world: World) -> None:
    world.batches.finish, world.batches.created_at = None, time.time() - HOURS_21
    world.store.add(lots(3))
    world.orphan("vision-orphan", ["job-1-lot-0", "job-1-lot-1"])
    asyncio.run(reconcile(world.stage))
    assert world.store.shard("vision-orphan").status == "submitted"  # type: ignore[union-attr]
    assert world.store.oldest_submitted_age_s() >= HOURS_21


def test_a_batch_adopted_by_recovery_reads_its_own_age(world: World) -> None:
    # Its create was answered with a timeout but made the batch: recovery finds it by metadata.
    world.batches.finish, world.batches.created_at = None, time.time() - HOURS_21
    world.batches.lost_answers = [ModelTimeoutError("timed out")]
    world.store.add(lots(2))
    world.rounds(2)
    assert len(world.batches.batches) == 1 and len(world.store.shards("submitted")) == 1
    assert world.store.oldest_submitted_age_s() >= HOURS_21


def test_an_adopted_batch_gone_unreadable_is_not_taken_for_lost_by_batches_made_before_its_adoption(
        world: World) -> None:
    # A batch the reconciler adopts is older than the shard made for it. Unreadable later (a key of
    # another project), the listing's batches of ours created between the two were taken for proof
    # that it was gone: its lots went again, and OpenAI ran and billed both.
    world.batches.finish, world.batches.created_at = None, time.time() - HOURS_21
    world.store.add(lots(2))
    adopted = world.orphan("vision-orphan", ["job-1-lot-0", "job-1-lot-1"])
    asyncio.run(reconcile(world.stage))
    assert world.store.shard("vision-orphan").status == "submitted"  # type: ignore[union-attr]
    world.batches.created_at = time.time() - 3600  # a batch of ours dated before the adoption
    world.store.add(lots(2, job_id="job-2"))
    world.rounds()
    world.batches.unlisted.add(adopted)  # neither readable by id nor listed: its fate is unknown
    world.rounds()
    assert world.stage.unreadable, "a batch of unknown fate holds the stage paused"
    assert world.store.shard("vision-orphan").status == "submitted"  # type: ignore[union-attr]
    assert {world.store.rows[lot].shard_id for lot in ("job-1-lot-0", "job-1-lot-1")} == {"vision-orphan"}
