"""A shard whose job was cancelled while it was `building` makes no batch (in-memory ports)."""

from __future__ import annotations

import pytest

from lotlens_common.model.errors import ModelUnavailableError
from lotlens_common.stage.core import lifecycle
from tests.unit.stage.conftest import World, lots


def test_a_shard_whose_job_was_cancelled_after_a_failed_create_makes_no_batch(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Recovery built it again: batch-2 was created, then cancelled at the next watch, and OpenAI
    # billed what it had run meanwhile.
    monkeypatch.setattr(lifecycle, "CREATE_LANDS_S", 0.0)  # the failed create's batch did not land
    world.batches.errors["create"] = [ModelUnavailableError("HTTP 503 server_error")]
    world.store.add(lots(2))
    world.rounds()
    world.store.cancelled.add("job-1")
    world.rounds(2)
    assert (world.batches.batches, world.batches.cancel_asks) == ({}, [])
    assert set(world.store.statuses().values()) == {"cancelled"} and world.submitted() == []
    assert [s.status for s in world.store.shards_by_id.values()] == ["empty"]


def test_a_shard_claimed_just_before_its_job_was_cancelled_uploads_nothing(world: World) -> None:
    world.store.add(lots(2))
    world.store.cancelled.add("job-1")  # the claim read the queue before the cancellation landed
    world.rounds()
    assert world.batches.files == {} and world.batches.batches == {}
    assert set(world.store.statuses().values()) == {"cancelled"}
