"""The stage's steps driven through in-memory ports: submit, watch, collect, recover, reconcile."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from lotlens_common.model.errors import (
    ModelError,
    ModelOutputError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelTimeoutError,
    ModelUnavailableError,
)
from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage import metrics, record, submit
from lotlens_common.stage.adapters.direct import DirectBatches
from lotlens_common.stage.reconcile import reconcile
from lotlens_common.stage.record import batch_metadata
from lotlens_common.stage.work import LotWork, VisionWork
from lotlens_vision_batcher.vision_stage import VisionStage
from tests.unit.stage.conftest import World, dead_images_unreachable, lots
from tests.unit.stage.fakes import described


def paused(world: World) -> float:
    return metrics.PAUSED.labels(stage="vision")._value.get()  # type: ignore[no-any-return]


def test_waiting_to_submitted_one_batch_per_shard_put_on_record(world: World) -> None:
    world.batches.finish = None
    world.store.add(lots(3))
    world.rounds()
    [event] = world.submitted()
    [shard] = world.store.shards("submitted")
    assert shard.batch_id == event.batch_id and sorted(event.lot_ids) == sorted(world.store.rows)
    assert world.batches.batches[event.batch_id]["metadata"] == batch_metadata(
        "vision", "job-1", shard.shard_id, 1)
    assert set(world.store.statuses().values()) == {"submitted"}


def test_submitted_running_batch_is_waited_on_and_its_status_noted(world: World) -> None:
    world.batches.finish = None
    world.store.add(lots(2))
    world.rounds(3)
    [shard] = world.store.shards("submitted")
    assert shard.batch_status == "validating" and world.completed() == []


def test_submitted_to_collected_every_lot_done_with_its_result(world: World) -> None:
    world.store.add(lots(3))
    world.rounds(2)
    assert world.completed() == ["job-1-lot-0", "job-1-lot-1", "job-1-lot-2"]
    assert set(world.store.statuses().values()) == {"done"}
    assert [s.status for s in world.store.shards_by_id.values()] == ["collected"]


def test_a_lot_with_no_reachable_image_fails_at_preparation_without_a_batch(world: World) -> None:
    [lot] = lots(1)
    world.store.add([lot.with_work(lot.work.model_copy(update={"image_urls": ("https://img/dead.jpg",)}))])
    world.rounds()
    assert world.failed() == {"job-1-lot-0": "none of the lot's 1 images could be fetched"}
    assert world.batches.batches == {}


@pytest.mark.parametrize("code", ["invalid_request_error", "content_policy_violation", "invalid_image_url"])
def test_a_4xx_line_fails_its_lot_at_once_with_the_reason_and_is_not_sent_again(
        world: World, code: str) -> None:
    world.batches.answer = lambda custom_id, body: (400, code) if custom_id.endswith("-1") else described(
        custom_id, body)
    world.store.add(lots(3))
    world.rounds(4)
    assert world.completed() == ["job-1-lot-0", "job-1-lot-2"]
    assert code in world.failed()["job-1-lot-1"]
    assert len(world.submitted()) == 1


@pytest.mark.parametrize(("status", "code"), [(500, "server_error"), (429, "rate_limit_exceeded"),
                                              (503, "overloaded")])
def test_a_transient_line_is_sent_again_then_fails_after_max_attempts(
        world: World, status: int, code: str) -> None:
    world.batches.answer = lambda custom_id, body: (status, code) if custom_id.endswith("-1") else described(
        custom_id, body)
    world.store.add(lots(2))
    world.rounds(6)
    assert [b.lot_ids for b in world.submitted()][1] == ("job-1-lot-1",)
    assert "gave up after 2 attempts" in world.failed()["job-1-lot-1"]


def test_an_unusable_answer_fails_the_lot_without_a_retry(world: World) -> None:
    world.batches.answer = lambda custom_id, body: {"status": "incomplete",
                                                    "incomplete_details": {"reason": "max_output_tokens"}}
    world.store.add(lots(1))
    world.rounds(3)
    assert "incomplete" in world.failed()["job-1-lot-0"] and len(world.submitted()) == 1


def test_an_expired_batch_keeps_its_finished_lines_and_resubmits_the_rest(world: World) -> None:
    world.batches.finish, world.batches.done_lines = "expired", 2
    world.store.add(lots(4))
    world.rounds()
    assert len(world.completed()) == 2
    world.batches.finish = "completed"
    world.rounds(2)
    assert len(world.completed()) == 4 and len(world.submitted()[1].lot_ids) == 2


@pytest.mark.parametrize("outcome", ["failed", "cancelled"])
def test_a_batch_failed_or_cancelled_by_openai_sends_its_lots_again(world: World, outcome: str) -> None:
    world.batches.finish = outcome
    world.store.add(lots(3))
    world.rounds()
    world.batches.finish = "completed"
    world.rounds(2)
    assert len(world.completed()) == 3 and world.submitted()[1].attempt == 2


def test_a_cancelled_job_cancels_its_batch_keeps_finished_lines_and_cancels_the_rest(world: World) -> None:
    world.batches.finish, world.batches.done_lines = None, 1
    world.store.add(lots(3))
    world.rounds()
    world.store.cancelled.add("job-1")
    world.rounds(3)
    assert len(world.batches.cancelled) == 1 and world.completed() == ["job-1-lot-0"]
    assert sorted(world.store.statuses().values()) == ["cancelled", "cancelled", "done"]
    assert len(world.submitted()) == 1


def test_a_batch_older_than_the_max_age_is_cancelled_and_its_unfinished_lots_resubmitted(
        world: World) -> None:
    world.batches.finish, world.batches.done_lines = None, 1
    world.batches.created_at = 1_000.0  # long ago
    world.store.add(lots(3))
    world.rounds(2)
    assert len(world.batches.cancelled) == 1 and world.completed() == ["job-1-lot-0"]
    world.batches.finish, world.batches.created_at = "completed", 4_000_000_000.0
    world.rounds(2)
    assert len(world.completed()) == 3 and len(world.submitted()[1].lot_ids) == 2


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


def test_an_unreadable_batch_missing_from_a_listing_of_our_other_batches_is_resubmitted(
        world: World) -> None:
    world.batches.finish = None
    world.store.add(lots(1))
    world.rounds()
    world.store.add(lots(1, job_id="job-2"))
    world.rounds()
    first = world.submitted()[0].batch_id
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


@pytest.mark.parametrize(("method", "error"), [
    ("upload", ModelUnavailableError("500")), ("upload", ModelTimeoutError("timed out")),
    ("create", ModelRateLimitedError("429", 1.0)), ("create", ModelUnavailableError("503"))])
def test_a_failed_upload_or_create_leaves_the_shard_building_and_recovery_builds_it(
        world: World, method: str, error: ModelError) -> None:
    world.store.add(lots(2))
    world.batches.errors[method] = [error]
    world.rounds()
    assert [s.status for s in world.store.shards_by_id.values()] == ["building"]
    world.housekeep()
    world.rounds(2)
    assert len(world.completed()) == 2 and len(world.batches.batches) == 1


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


def _orphan(world: World, shard_id: str, lot_ids: list[str]) -> str:
    path = Path(world.settings.work_dir) / f"{shard_id}.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"custom_id": i, "body": {}}) + b"\n" for i in lot_ids))
    file_id = asyncio.run(world.batches.upload_batch_file(path))
    batch = asyncio.run(world.batches.create_batch(file_id, batch_metadata("vision", "job-1", shard_id, 1)))
    return str(batch["id"])


def test_the_reconciler_adopts_an_orphan_batch_and_its_lots_are_not_sent_again(world: World) -> None:
    world.store.add(lots(3))
    orphan = _orphan(world, "vision-orphan", ["job-1-lot-0", "job-1-lot-1"])
    asyncio.run(reconcile(world.stage))
    assert world.store.shard("vision-orphan").batch_id == orphan  # type: ignore[union-attr]
    world.rounds(2)
    assert len(world.completed()) == 3 and len(world.batches.batches) == 2
    assert sorted(b.lot_ids for b in world.submitted())[0] == ("job-1-lot-0", "job-1-lot-1")


def test_a_duplicate_from_a_retried_create_is_cancelled_by_the_reconciler(world: World) -> None:
    world.batches.finish, world.batches.duplicate_creates = None, 1
    world.store.add(lots(2))
    world.rounds()
    recorded = world.submitted()[0].batch_id
    asyncio.run(reconcile(world.stage))
    assert [b for b in world.batches.batches if b != recorded] == world.batches.cancelled


def test_a_batch_of_a_job_never_seen_is_left_alone(world: World) -> None:
    world.batches.finish = None
    _orphan(world, "vision-elsewhere", ["x"])
    world.store.rows.clear()
    asyncio.run(reconcile(world.stage))
    assert world.batches.cancelled == [] and world.store.shards_by_id == {}


def test_direct_mode_is_a_batches_adapter_collected_in_the_round_it_is_sent(world: World) -> None:
    async def call(body: Mapping[str, Any]) -> dict[str, Any]:
        text = body["input"][0]["content"][-1]["text"]
        if text.endswith("1"):
            raise ModelRequestError("bad image", 400, "invalid_image_url")
        if text.endswith("2"):
            raise ModelUnavailableError("503")
        return described(text, body)

    world.restart(DirectBatches(call, 4, Path(world.settings.work_dir)))
    world.store.add(lots(3))
    world.rounds(1)
    assert world.completed() == ["job-1-lot-0"]
    assert "invalid_image_url" in world.failed()["job-1-lot-1"]
    # 503: sent again, in the same round (what became due is sent after each collection)
    assert world.store.statuses()["job-1-lot-2"] == "submitted"


def test_a_file_refused_as_too_large_sends_its_lots_again_in_smaller_files(world: World) -> None:
    world.batches.errors["upload"] = [ModelRequestError(
        "HTTP 400 file_too_large: File is too large.", 400, "file_too_large")]
    world.store.add(lots(4))
    world.rounds()
    assert world.batches.batches == {} and set(world.store.statuses().values()) == {"waiting"}
    limit = world.stage.file_byte_limit()
    assert limit < world.settings.max_batch_bytes
    world.rounds(4)
    assert len(world.completed()) == 4 and len(world.batches.batches) >= 2
    assert all(sum(map(len, world.batches.files[b["input_file_id"]])) <= limit
               for b in world.batches.batches.values())


def test_a_batch_failed_as_too_large_cuts_the_next_files_smaller(world: World) -> None:
    world.batches.finish = None
    world.store.add(lots(2))
    world.rounds()
    [batch] = world.batches.batches.values()
    batch["status"], batch["errors"] = "failed", {"data": [{"code": "file_too_large", "message": "big"}]}
    world.rounds()
    assert world.stage.max_file_bytes == world.settings.max_batch_bytes // 2
    # Sent again at once (what became due is sent after each collection), in a smaller file.
    assert set(world.store.statuses().values()) == {"submitted"} and len(world.batches.batches) == 2


def test_a_shard_whose_send_failed_is_sent_again_at_the_next_watch_not_a_minute_later(world: World) -> None:
    world.store.add(lots(2))
    world.batches.errors["create"] = [ModelUnavailableError("the API is restarting")]
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


def test_an_unusable_answer_the_spec_can_fix_is_sent_again_with_the_new_work(world: World) -> None:
    class Roomier(VisionStage):
        def retry_unusable(self, lot: LotWork[VisionWork], error: ModelOutputError) -> LotWork[VisionWork]:
            return lot.with_work(lot.work.model_copy(update={"additional_info": "more room"}))

    seen: list[str] = []

    def answer(custom_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        seen.append(body["input"][0]["content"][-1]["text"])
        if len(seen) == 1:
            return {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
        return described(custom_id, body)

    world.batches.answer = answer
    world.stage.spec = Roomier("vision", ModelSettings(), dead_images_unreachable)
    world.store.add(lots(1))
    world.rounds(3)
    assert seen == ["Camry 0", "more room"] and world.completed() == ["job-1-lot-0"]


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
