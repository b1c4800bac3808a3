"""Batches that will not stop: stuck in a running status past every deadline (in-memory ports)."""

from __future__ import annotations

import time

from lotlens_common.stage.core.lifecycle import CANCELLING_LIMIT_S
from tests.unit.stage.conftest import World, lots


def test_a_batch_stuck_finalizing_that_refuses_cancels_is_given_up_after_its_deadline(world: World) -> None:
    # OpenAI has had batches stuck in `finalizing`, and it refuses to cancel a batch it cannot
    # (409). Past its age such a batch was cancelled again at every poll and never given up on:
    # its lots stayed submitted and its job never finished.
    world.batches.finish = None
    world.batches.uncancellable.add("finalizing")
    world.store.add(lots(2))
    world.rounds()
    [stuck] = world.batches.batches.values()
    stuck["status"] = "finalizing"
    stuck["created_at"] = time.time() - world.settings.max_batch_age_s - 60  # past its age
    world.rounds(3)
    assert world.batches.cancel_asks == [stuck["id"]] * 3  # asked each round, refused each time
    assert set(world.store.statuses().values()) == {"submitted"} and len(world.submitted()) == 1
    stuck["created_at"] -= CANCELLING_LIMIT_S  # an hour later, still finalizing
    world.rounds()
    # Given up on: its lots went back to waiting, as a retry...
    assert set(world.store.statuses().values()) == {"waiting"}
    assert all("still finalizing" in (row.last_error or "") for row in world.store.rows.values())
    world.rounds(3)
    # ... sent again in a new batch (their second attempt), and the stuck one is asked no more.
    assert [(len(event.lot_ids), event.attempt) for event in world.submitted()[1:]] == [(2, 2)]
    assert world.batches.cancel_asks == [stuck["id"]] * 3

