"""The stage's steps when OpenAI or the process fails them: unreadable batches, failing calls,
crashes at each step, lost locks, a refused key (in-memory ports)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import orjson
import pytest

from lotlens_common.model.errors import (
    ModelError,
    ModelQuotaExceededError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelTimeoutError,
    ModelUnavailableError,
    ModelUnreachableError,
)
from lotlens_common.stage import quota, record, submit
from lotlens_common.stage.recover import recover_building
from lotlens_common.stage.runner import _housekeep_apart, run_stage_loop, step
from tests.unit.stage.conftest import World, lots, scraped
from tests.unit.stage.fakes import described


def paused(world: World) -> float:
    return scraped("lotlens_stage_paused")

@pytest.mark.parametrize("status_code", [401, 403, 404])
def test_a_batch_unreadable_by_id_pauses_submitting_and_resubmits_nothing(
        world: World, status_code: int) -> None:
    world.batches.finish = None
    world.store.add(lots(2))
    world.rounds()
    world.batches.errors["retrieve"] = [ModelRequestError("gone", status_code)] * 3
    world.batches.batches.clear()  # the key sees none of our batches (rotated, or another project)
    world.rounds()
    world.store.add(lots(2, job_id="job-2"))
    world.rounds(2)
    assert len(world.submitted()) == 1 and world.batches.batches == {}
    assert world.stage.unreadable and paused(world) == 1
    assert set(world.store.statuses().values()) == {"submitted", "waiting"}


def test_an_unreadable_batch_found_by_listing_is_collected_and_submitting_resumes(world: World) -> None:
    world.batches.finish = None
    world.store.add(lots(2))
    world.rounds()
    world.batches.errors["retrieve"] = [ModelRequestError("forbidden", 403)]
    world.batches.errors["list"] = [ModelRequestError("forbidden", 403)]
    world.rounds()
    assert world.stage.unreadable  # the listing failed too: still paused
    [batch] = world.batches.batches.values()
    batch["status"], batch["output_file_id"] = "completed", "out"
    world.batches.files["out"] = _described_lines(world)
    world.batches.errors["retrieve"] = [ModelRequestError("forbidden", 403)]
    world.rounds()
    assert not world.stage.unreadable and paused(world) == 0
    assert len(world.completed()) == 2 and len(world.batches.batches) == 1


def _described_lines(world: World) -> list[bytes]:
    return [orjson.dumps({"custom_id": lot_id,
                          "response": {"status_code": 200, "body": described(lot_id, {})}})
            for lot_id in world.store.rows]


def test_an_unreadable_batch_missing_from_a_listing_of_our_earlier_batches_is_resubmitted(
        world: World) -> None:
    world.batches.finish = None
    world.batches.created_at = time.time() - 60  # job-2's batch, a minute before job-1's shard
    world.store.add(lots(1, job_id="job-2"))
    world.rounds()
    world.batches.created_at = time.time()
    world.store.add(lots(1))
    world.rounds()
    first = world.submitted()[1].batch_id
    del world.batches.batches[first]
    world.batches.errors["retrieve"] = [ModelRequestError("not found", 404)]
    world.rounds()
    world.batches.finish = "completed"
    world.rounds(3)
    assert world.completed() == ["job-1-lot-0", "job-2-lot-0"] and len(world.submitted()) == 3


@pytest.mark.parametrize("error", [ModelRateLimitedError("429", 1.0), ModelUnavailableError("502"),
                                   ModelTimeoutError("timed out")])
def test_reading_a_batch_failing_transiently_is_tried_next_round_without_pausing(
        world: World, error: ModelError) -> None:
    world.store.add(lots(2))
    world.batches.errors["retrieve"] = [error]
    world.rounds()
    assert not world.stage.unreadable and world.completed() == []
    world.rounds()
    assert len(world.completed()) == 2


# A create answered 5xx or timed out may have made its batch: `test_create_unknown.py`.
@pytest.mark.parametrize(("method", "error"), [
    ("upload", ModelUnavailableError("500")), ("upload", ModelTimeoutError("timed out")),
    ("create", ModelRateLimitedError("429", 1.0))])
def test_a_failed_upload_or_create_leaves_the_shard_building_and_recovery_builds_it(
        world: World, method: str, error: ModelError) -> None:
    world.store.add(lots(2))
    world.batches.errors[method] = [error]
    world.rounds()
    assert [s.status for s in world.store.shards_by_id.values()] == ["building"]
    world.housekeep()
    world.rounds(2)
    assert len(world.completed()) == 2 and len(world.batches.batches) == 1

@pytest.mark.parametrize("error", [
    ModelRateLimitedError("429", 1.0), ModelRequestError("HTTP 400 invalid_request_error", 400),
    ModelQuotaExceededError("HTTP 429 insufficient_quota: You exceeded your current quota")])
def test_an_input_file_whose_batch_was_surely_not_created_is_deleted(
        world: World, error: ModelError, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each round rebuilt and uploaded the shard's file again, and nothing deleted the last one: at
    # up to 198 MB a round, a create refused for hours filled the project's 2.5 TB of files.
    # A refusal (429, 4xx) created no batch, so its file is deleted; after a 5xx the batch may
    # exist and read it, so that file is kept (it expires with OpenAI's 30 days). Refused for the
    # quota (a ModelUnavailableError), it was kept. That pause's wait is none here.
    monkeypatch.setattr(quota, "QUOTA_FIRST_WAIT_S", 0.0)
    world.store.add(lots(2))
    world.batches.errors["create"] = [error, error, error]
    world.rounds(4)
    assert len(world.completed()) == 2 and len(world.batches.batches) == 1
    [batch] = world.batches.batches.values()
    refused = [file_id for file_id in world.batches.deleted
               if file_id not in (batch["input_file_id"], batch["output_file_id"])]
    assert len(refused) == 3  # and the collected batch's own files after its collection
    assert world.batches.files == {}


class Crash(BaseException):
    """The process dies here."""


@pytest.mark.parametrize("point", ["vision.after_shard_claimed", "vision.after_batch_created",
                                   "vision.after_batch_published"])
def test_a_crash_at_each_step_is_recovered_without_a_second_batch(
        world: World, monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    def die(name: str) -> None:
        if name == point:
            raise Crash(name)

    monkeypatch.setattr(submit, "fault_point", die)
    monkeypatch.setattr(record, "fault_point", die)
    world.store.add(lots(3))
    with pytest.raises(Crash):
        world.rounds()
    monkeypatch.undo()
    world.restart()
    world.housekeep()
    world.rounds(2)
    assert len(world.batches.batches) == 1
    assert world.completed() == ["job-1-lot-0", "job-1-lot-1", "job-1-lot-2"]


def test_recovery_stops_listing_at_the_page_that_shows_the_shards_batch(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Recovery looks a dead builder's batch up by its shard's metadata; every page of the listing
    # was read after the one that showed it (up to 50 pages, 5,000 batches, for each such shard).
    def die(name: str) -> None:
        if name == "vision.after_batch_created":
            raise Crash(name)

    world.batches.page_size = 2
    for i in range(9):  # older batches of the stage's other shards
        metadata = record.batch_metadata("vision", "job-0", f"vision-{i}", 1)
        asyncio.run(world.batches.create_batch("file-x", metadata))
    monkeypatch.setattr(submit, "fault_point", die)
    world.store.add(lots(2))
    with pytest.raises(Crash):
        world.rounds()
    monkeypatch.undo()
    world.restart()
    world.batches.pages_listed = 0
    asyncio.run(recover_building(world.stage))
    pages = world.batches.pages_listed
    assert pages == 1
    assert [s.status for s in world.store.shards_by_id.values()] == ["submitted"]
    assert len(world.batches.batches) == 10  # adopted, not built again


def test_a_building_shard_another_instance_holds_is_left_to_it(world: World) -> None:
    world.store.add(lots(1))
    world.batches.errors["create"] = [ModelUnavailableError("503")]
    world.rounds()
    [shard] = world.store.shards("building")
    world.store.locks.add(shard.shard_id)
    world.housekeep()
    assert world.batches.batches == {}


def test_a_building_shard_whose_lots_are_gone_is_closed_empty(world: World) -> None:
    world.store.add(lots(1))
    world.batches.errors["create"] = [ModelUnavailableError("503")]
    world.rounds()
    world.store.rows["job-1-lot-0"].status = "done"
    world.housekeep()
    assert [s.status for s in world.store.shards_by_id.values()] == ["empty"]

def test_a_shard_whose_send_failed_is_sent_again_at_the_next_watch_not_a_minute_later(world: World) -> None:
    world.store.add(lots(2))
    world.batches.errors["create"] = [ModelUnreachableError("connection refused: the API is restarting")]
    world.rounds()
    assert [s.status for s in world.store.shards_by_id.values()] == ["building"]
    world.rounds(3)  # no housekeeping: it runs once a minute
    assert len(world.completed()) == 2 and len(world.batches.batches) == 1


def test_a_builder_whose_lock_a_database_restart_took_creates_no_batch_and_recovery_builds_one(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    upload = world.batches.upload_batch_file

    async def upload_while_the_database_restarts(path: Path) -> str:
        world.store.lost |= world.store.locks  # the lock's session ended; another instance may take it
        return await upload(path)

    monkeypatch.setattr(world.batches, "upload_batch_file", upload_while_the_database_restarts)
    world.store.add(lots(2))
    world.rounds()
    assert world.batches.batches == {}, "a batch was created under a lost lock"
    assert [s.status for s in world.store.shards_by_id.values()] == ["building"]
    monkeypatch.undo()
    world.store.lost.clear()
    world.rounds(3)
    assert len(world.completed()) == 2 and len(world.batches.batches) == 1

@pytest.mark.parametrize("status_code", [401, 403])
def test_a_refused_key_on_create_pauses_submitting_until_recovery_succeeds(
        world: World, status_code: int) -> None:
    # Refused three times: the first send and the retries at the next two watches.
    world.batches.errors["create"] = [ModelRequestError("invalid_api_key", status_code)] * 3
    world.store.add(lots(2))
    world.rounds()
    world.store.add(lots(2, job_id="job-2"))
    world.rounds()  # recovery tries the refused shard again: refused again
    assert world.stage.unreadable and len(world.store.shards_by_id) == 1  # job-2 not sent
    assert {world.store.statuses()[f"job-2-lot-{i}"] for i in range(2)} == {"waiting"}
    world.rounds(3)  # recovery succeeds with the key: submitting resumes
    assert not world.stage.unreadable and len(world.completed()) == 4


@pytest.mark.parametrize("status_code", [401, 403])
def test_a_key_refused_once_by_the_housekeeping_listing_pauses_only_until_a_listing_succeeds(
        world: World, status_code: int) -> None:
    # The minute's reconcile listing refused once, with no shard `building`: recovery, which
    # alone ended the pause, had nothing to recover, and the stage submitted nothing until restarted.
    world.batches.errors["list"] = [ModelRequestError("invalid_api_key", status_code)]
    asyncio.run(_housekeep_apart(world.stage))
    assert world.stage.unreadable  # paused
    world.store.add(lots(2))
    world.rounds()
    assert world.submitted() == []  # still paused: the key has not been shown to work yet
    asyncio.run(_housekeep_apart(world.stage))  # the key works again: the listing succeeds
    world.rounds(2)
    assert not world.stage.unreadable and paused(world) == 0
    assert len(world.submitted()) == 1 and len(world.completed()) == 2



def test_a_key_that_may_list_but_not_upload_stays_paused_through_the_minutes_listing(world: World) -> None:
    # OpenAI's restricted keys grant the Files and Batch endpoints separately. A refused upload
    # paused the stage; the next minute's listing, allowed, lifted the pause, so every minute the
    # stage claimed another shard that stayed `building`, and logged the pause and its end again.
    world.batches.errors["upload"] = [ModelRequestError("insufficient permissions", 401)] * 100
    world.store.add(lots(2))
    world.rounds()
    assert world.stage.unreadable  # paused by the refused upload
    for minute in range(3):
        world.store.add(lots(2, job_id=f"job-{minute + 2}"))
        asyncio.run(_housekeep_apart(world.stage))  # the listing succeeds with the key
        assert world.stage.unreadable, f"minute {minute}: the listing lifted the upload's pause"
        asyncio.run(step(world.stage, watching=False))  # the loop's next tick, between watches
    assert len(world.store.shards_by_id) == 1  # no new shard claimed while paused
    world.batches.errors["upload"] = []
    world.rounds(3)  # recovery uploads with the key: submitting resumes
    assert not world.stage.unreadable and len(world.completed()) == 8

def test_a_running_batch_is_watched_without_taking_its_shards_lock(world: World) -> None:
    world.batches.finish = None
    world.store.add(lots(2))
    world.rounds()
    [shard] = world.store.shards("submitted")
    world.store.locks.add(shard.shard_id)  # another instance holds it: watching needs no lock
    world.store.note_batch_status(shard.shard_id, "unseen")
    world.rounds()
    assert world.store.shards_by_id[shard.shard_id].batch_status == "validating"


def test_a_finished_batch_whose_shard_another_instance_holds_is_left_to_it(world: World) -> None:
    world.batches.finish = None
    world.store.add(lots(2))
    world.rounds()
    [shard] = world.store.shards("submitted")
    world.store.locks.add(shard.shard_id)
    world.batches.finish = "completed"
    world.rounds(2)
    assert world.completed() == [] and world.store.shards_by_id[shard.shard_id].status == "submitted"
    world.store.locks.discard(shard.shard_id)
    world.rounds()
    assert world.completed() == ["job-1-lot-0", "job-1-lot-1"]


def test_a_batch_listing_that_keeps_failing_does_not_stop_sending_and_collecting(world: World) -> None:
    # The minute's housekeeping lists batches. It ran in the round's own `try`: while the listing
    # failed (429s, an outage of that one endpoint) each round ended there, and nothing was sent or
    # collected, round after round, while the heartbeat said the process was well.
    world.batches.errors["list"] = [ModelRequestError("HTTP 429 rate_limit_exceeded", 429)
                                    for _ in range(10_000)]
    world.store.add(lots(3))
    stop = threading.Event()
    timer = threading.Timer(1.5, stop.set)
    timer.start()
    run_stage_loop(world.stage, stop)
    timer.join()
    assert world.completed() == ["job-1-lot-0", "job-1-lot-1", "job-1-lot-2"]
