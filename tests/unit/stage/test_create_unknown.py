"""A create whose outcome is unknown (a timeout, a 5xx): its batch may exist, or land later, and
the shard is not built again before a listing would show it (in-memory ports)."""

from __future__ import annotations

import pytest

from lotlens_common.model.errors import ModelError, ModelTimeoutError, ModelUnavailableError
from lotlens_common.stage.core import lifecycle
from tests.unit.stage.conftest import World, lots


def test_a_create_answered_with_a_timeout_whose_batch_lands_late_is_paid_once(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # The shard stayed `building`, the next watch's listing showed no batch yet, and recovery built
    # a second one; the first landed, the reconciler cancelled it, and OpenAI billed what it ran.
    monkeypatch.setattr(lifecycle, "LIST_WHILE_LANDING_S", 0.0)  # each watch a minute apart
    world.batches.finish = None
    world.batches.lost_answers = [ModelTimeoutError("timed out")]
    world.store.add(lots(2))
    world.rounds()
    world.batches.unlisted = set(world.batches.batches)  # made at OpenAI, not shown yet
    world.rounds(2)
    world.batches.unlisted.clear()
    world.housekeep()
    world.batches.finish = "completed"
    world.rounds(2)
    assert (len(world.batches.batches), world.batches.cancelled) == (1, [])
    assert world.completed() == ["job-1-lot-0", "job-1-lot-1"] and len(world.submitted()) == 1


@pytest.mark.parametrize("error", [ModelUnavailableError("503"), ModelTimeoutError("timed out")])
def test_a_create_that_made_its_batch_but_answered_an_error_has_its_batch_adopted(
        world: World, error: ModelError) -> None:
    world.batches.lost_answers = [error]
    world.store.add(lots(2))
    world.rounds()
    assert [s.status for s in world.store.shards_by_id.values()] == ["building"]
    world.rounds(2)
    assert len(world.completed()) == 2 and len(world.batches.batches) == 1


def test_a_shard_whose_create_made_no_batch_is_built_again_once_a_listing_would_show_it(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.batches.errors["create"] = [ModelUnavailableError("503")]
    world.store.add(lots(2))
    world.rounds(3)
    assert world.batches.batches == {} and world.completed() == []  # it may still land
    monkeypatch.setattr(lifecycle, "CREATE_LANDS_S", 0.0)
    world.rounds(2)
    assert len(world.completed()) == 2 and len(world.batches.batches) == 1


def test_a_shard_waiting_for_its_create_to_land_does_not_list_every_batch_every_watch(world: World) -> None:
    # Listed before the wait was checked: every watch (10 s) for 10 minutes read up to 50 pages.
    world.batches.page_size = 1
    others = [f"batch-other-{i}" for i in range(60)]
    world.batches.batches = {batch_id: {"id": batch_id, "metadata": {}} for batch_id in others}
    world.batches.lost_answers = [ModelUnavailableError("HTTP 503 server_error")]
    world.store.add(lots(2))
    world.rounds()
    world.batches.unlisted = {b for b in world.batches.batches if not b.startswith("batch-other")}
    listed = world.batches.pages_listed
    world.rounds(6)
    assert world.batches.pages_listed - listed <= 50  # a listing at most, not one a watch
    assert [s.status for s in world.store.shards_by_id.values()] == ["building"]


def test_a_pod_whose_clock_runs_ahead_still_waits_for_the_create_to_land(world: World) -> None:
    # The shard's create_asked_at is the database's time, compared with the pod's: 600 s ahead, it
    # built a second batch at once while the first could still land (and be paid for twice).
    world.store.db_clock_ahead_s = -lifecycle.CREATE_LANDS_S
    world.batches.errors["create"] = [ModelUnavailableError("HTTP 503 server_error")]
    world.store.add(lots(2))
    world.rounds(3)
    assert world.batches.batches == {} and world.submitted() == []
