"""Batches that will not stop: stuck in a running status past every deadline, or refusing a
cancel because they finished meanwhile (in-memory ports)."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import REGISTRY

from lotlens_common.stage.core.lifecycle import CANCELLING_LIMIT_S
from tests.unit.stage.conftest import World, lots


def _bad_requests() -> float:
    labels = {"stage": "vision", "operation": "batches", "kind": "bad_request"}
    return REGISTRY.get_sample_value("lotlens_openai_errors_total", labels) or 0.0


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


def test_a_cancel_refused_as_the_batch_finished_meanwhile_collects_it_in_the_same_round(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    # The batch of a cancelled job finished between the poll that saw it running and the cancel:
    # OpenAI answers 409. The refusal went up as a failure (a traceback, an OpenAI "bad_request"
    # counted), and the batch was collected only at the next poll.
    world.batches.finish = None
    world.store.add(lots(2))
    world.rounds()
    world.store.cancelled.add("job-1")
    world.batches.finish_before_cancel = "completed"
    before = _bad_requests()
    with caplog.at_level(logging.WARNING):
        world.rounds()
    assert set(world.store.statuses().values()) == {"done"} and len(world.completed()) == 2
    assert [s.status for s in world.store.shards_by_id.values()] == ["collected"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert _bad_requests() == before
