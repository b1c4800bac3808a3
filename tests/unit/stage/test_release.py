"""An operator's release of a shard whose batch no key of ours can see (in-memory ports): the
stage records the pause on the shard, carries the decision out, and every instance unpauses."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lotlens_common.model.errors import ModelRequestError
from lotlens_common.stage.core.lifecycle import FAIL, RELEASED, RESEND
from lotlens_common.stage.ports import Stage
from tests.unit.stage.conftest import World, lots, scraped


def paused() -> float:
    return scraped("lotlens_stage_paused")


def _paused_on_an_unseen_batch(world: World) -> str:
    """Two lots in a batch the key then cannot see, nor any other of ours; the shard's id."""
    world.batches.finish = None
    world.store.add(lots(2))
    world.rounds()
    world.batches.errors["retrieve"] = [ModelRequestError("gone", 404)] * 2
    world.batches.batches.clear()
    world.rounds(2)
    [shard] = world.store.shards("submitted")
    return shard.shard_id


def _release(world: World, shard_id: str, decision: str) -> None:
    """What `lotlens-admin shards release` writes."""
    world.store.shards_by_id[shard_id] = replace(world.store.shards_by_id[shard_id], release=decision)


def test_the_pause_is_recorded_on_the_shard_with_why(world: World) -> None:
    shard_id = _paused_on_an_unseen_batch(world)
    reason = world.store.shards_by_id[shard_id].unreadable
    assert reason is not None and "gone" in reason and "none of our batches" in reason


def test_a_shard_released_to_resend_sends_its_lots_again_and_submitting_resumes(world: World) -> None:
    shard_id = _paused_on_an_unseen_batch(world)
    world.store.add(lots(1, job_id="job-2"))
    world.batches.finish = "completed"
    _release(world, shard_id, RESEND)
    world.rounds(3)
    assert not world.stage.unreadable and paused() == 0
    assert world.store.shards_by_id[shard_id].batch_status == RELEASED
    assert len(world.completed()) == 3 and world.failed() == {}


def test_a_shard_released_to_fail_fails_its_lots_with_the_reason(world: World) -> None:
    shard_id = _paused_on_an_unseen_batch(world)
    _release(world, shard_id, FAIL)
    world.rounds()
    assert set(world.failed().values()) == {
        f"OpenAI batch {world.store.shards_by_id[shard_id].batch_id} could not be read; failed by an "
        "operator's decision"}
    assert not world.stage.unreadable and paused() == 0


def test_a_release_carried_out_by_another_instance_unpauses_this_one(world: World) -> None:
    # This instance's pause stayed in its memory until it restarted: the shard was no longer
    # submitted, so no round looked at it again.
    shard_id = _paused_on_an_unseen_batch(world)
    this: Stage[Any] = world.stage
    world.restart()  # the other instance, on the same tables and OpenAI
    _release(world, shard_id, FAIL)
    world.rounds()
    assert not world.stage.unreadable and this.unreadable
    world.stage = this
    world.store.add(lots(1, job_id="job-2"))
    world.batches.finish = "completed"
    world.rounds(2)
    assert not this.unreadable and paused() == 0
    assert world.completed() == ["job-2-lot-0"]


def test_a_release_recorded_while_the_batch_is_read_again_is_dropped_not_carried_out(world: World) -> None:
    # On-call puts the old project's key back while someone releases the shard: the round has
    # listed the shard unreleased, the release lands during its read, and the read succeeds. The
    # batch runs and will be paid: carried out next round, the release sent its lots again too.
    world.batches.finish = None
    world.store.add(lots(2))
    world.rounds()
    running = dict(world.batches.batches)
    world.batches.errors["retrieve"] = [ModelRequestError("gone", 404)] * 2
    world.batches.batches.clear()
    world.rounds(2)
    [shard] = world.store.shards("submitted")
    assert world.stage.unreadable
    world.batches.batches.update(running)
    retrieve = world.batches.retrieve_batch

    async def released_while_read(batch_id: str) -> dict[str, Any]:
        _release(world, shard.shard_id, RESEND)
        return await retrieve(batch_id)

    world.batches.retrieve_batch = released_while_read  # type: ignore[method-assign]
    world.rounds()
    world.batches.retrieve_batch = retrieve  # type: ignore[method-assign]
    world.rounds(2)
    after = world.store.shards_by_id[shard.shard_id]
    assert (after.status, after.release, after.unreadable) == ("submitted", None, None)
    assert len(world.submitted()) == 1 and not world.stage.unreadable
