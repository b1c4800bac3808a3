"""Batches that will not stop: stuck in a running status past every deadline, or refusing a
cancel because they finished meanwhile (in-memory ports)."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from lotlens_common.stage.core.lifecycle import CANCELLING_LIMIT_S
from tests.unit.stage.conftest import World, lots
from tests.unit.stage.fakes import described


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


def _given_up_next_round(world: World, stuck_in: str) -> dict[str, Any]:
    """A batch stuck `finalizing` (refusing cancels) or `cancelling` (its job cancelled), which the
    next round gives up on."""
    world.batches.finish, world.batches.stuck_cancelling = None, True
    world.batches.uncancellable.add("finalizing")
    world.store.add(lots(2))
    world.rounds()
    [stuck] = world.batches.batches.values()
    if stuck_in == "finalizing":
        stuck["status"] = "finalizing"
        stuck["created_at"] = time.time() - world.settings.max_batch_age_s - CANCELLING_LIMIT_S - 60
    else:
        world.store.cancelled.add("job-1")
        world.rounds()  # the cancel is asked and accepted; the batch stays `cancelling`
        assert stuck["status"] == "cancelling"
        stuck["cancelling_at"] -= CANCELLING_LIMIT_S + 60
    return stuck


@pytest.mark.parametrize("stuck_in", ["finalizing", "cancelling"])
def test_a_batch_given_up_on_has_its_files_deleted_at_openai(world: World, stuck_in: str) -> None:
    # Given up on, a stuck batch kept its files at OpenAI for their 30 days: every lot's request
    # (signed image URLs) held longer than needed, and counted against the project's storage.
    stuck = _given_up_next_round(world, stuck_in)
    world.rounds()
    assert next(iter(world.store.shards_by_id.values())).batch_status == "lost"
    assert world.batches.deleted == [stuck["input_file_id"]]


def test_a_batch_given_up_on_keeps_the_answers_of_its_result_file_and_deletes_it(world: World) -> None:
    stuck = _given_up_next_round(world, "cancelling")
    stuck["output_file_id"] = "out"
    world.batches.files["out"] = [orjson.dumps({"custom_id": "job-1-lot-0", "response": {
        "status_code": 200, "body": described("job-1-lot-0", {})}})]
    world.rounds()
    assert world.store.statuses() == {"job-1-lot-0": "done", "job-1-lot-1": "cancelled"}
    assert world.batches.deleted == [stuck["input_file_id"], "out"]


def test_a_batch_given_up_on_whose_result_file_is_refused_still_closes_and_its_lots_go_again(
        world: World) -> None:
    # Given up on, a batch is collected from the files it names; one refused (403) raised at every
    # round, and the shard of a batch already given up on never closed.
    stuck = _given_up_next_round(world, "finalizing")
    stuck["output_file_id"] = "out"
    world.batches.refused_files.add("out")
    world.rounds()
    assert next(iter(world.store.shards_by_id.values())).batch_status == "lost"
    assert set(world.store.statuses().values()) == {"waiting"}
