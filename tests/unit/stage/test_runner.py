"""The stage's steps driven through in-memory ports: a batch from waiting lots to settled ones,
with every per-line and per-batch outcome."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from lotlens_common.events import LotFailed, VisionCompleted
from lotlens_common.model.errors import (
    ModelOutputError,
)
from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage.ports import SENT_LOTS_KEPT
from lotlens_common.stage.record import batch_metadata
from lotlens_common.stage.work import LotWork, VisionWork
from lotlens_vision_batcher.vision_stage import VisionStage
from tests.unit.stage.conftest import World, dead_images_unreachable, lots
from tests.unit.stage.fakes import described


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


@pytest.mark.parametrize(("code", "reason"), [
    ("invalid_request_error", "invalid_request_error"),
    ("content_policy_violation", "content_policy_violation"),
    # The lot's only image refused: that image is missing, and none is left (API.md).
    ("invalid_image_url", "none of the lot's 1 images could be fetched")])
def test_a_4xx_line_fails_its_lot_at_once_with_the_reason_and_is_not_sent_again(
        world: World, code: str, reason: str) -> None:
    world.batches.answer = lambda custom_id, body: (400, code) if custom_id.endswith("-1") else described(
        custom_id, body)
    world.store.add(lots(3))
    world.rounds(4)
    assert world.completed() == ["job-1-lot-0", "job-1-lot-2"]
    assert reason in world.failed()["job-1-lot-1"]
    assert len(world.submitted()) == 1


def test_a_batch_whose_every_line_failed_logs_a_few_lines_and_one_summary_not_one_per_lot(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    # A 50,000-line batch refused whole wrote 50,000 warnings.
    world.batches.answer = lambda custom_id, body: (400, "invalid_request_error")
    world.store.add(lots(40))
    with caplog.at_level(logging.WARNING):
        world.rounds(4)
    assert len(world.failed()) == 40
    unanswered = [r.getMessage() for r in caplog.records if "got no answer" in r.getMessage()]
    assert len(unanswered) == 6, unanswered
    assert "40 lots got no answer in all" in unanswered[-1]
    assert "'permanent invalid_request_error': 40" in unanswered[-1]


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


def test_a_200_line_whose_response_failed_for_a_passing_reason_is_sent_again(world: World) -> None:
    # A body `status: failed` with `server_error` (openapi.yaml, ResponseErrorCode) says "not now".
    failed_once: set[str] = set()

    def answer(custom_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if custom_id in failed_once:
            return described(custom_id, body)
        failed_once.add(custom_id)
        return {"status": "failed", "output": [], "error": {"code": "server_error", "message": "An error."}}

    world.batches.answer = answer
    world.store.add(lots(2))
    world.rounds(4)
    assert world.completed() == ["job-1-lot-0", "job-1-lot-1"] and world.failed() == {}
    assert [event.attempt for event in world.submitted()] == [1, 2]


@pytest.mark.parametrize("in_a_200", [False, True])
def test_an_image_openai_cannot_fetch_is_missing_and_the_lot_described_from_the_rest(
        world: World, in_a_200: bool) -> None:
    # API.md: unreachable images are not an error. OpenAI fetches from its own network, so an image
    # the check reached can still be refused (400 invalid_image_url, naming it): the lot failed.
    # So it did when the refusal came as a 200 line whose Response `failed` (ResponseErrorCode).
    def answer(custom_id: str, body: Mapping[str, Any]) -> dict[str, Any] | tuple[int, str, str]:
        refused = [part["image_url"] for part in body["input"][0]["content"]
                   if "refused" in part.get("image_url", "")]
        if refused and in_a_200:
            return {"object": "response", "status": "failed", "output": [], "error": {
                "code": "failed_to_download_image", "message": f"Error while downloading {refused[0]}."}}
        if refused:
            return 400, "invalid_image_url", f"Error while downloading {refused[0]}."
        return described(custom_id, body)

    world.batches.answer = answer
    lot = lots(1)[0]
    urls = ("https://img/a.jpg", "https://img/refused-1.jpg", "https://img/refused-2.jpg")
    world.store.add([lot.with_work(lot.work.model_copy(update={"image_urls": urls}))])
    world.rounds(4)
    [done] = world.of(VisionCompleted)
    assert done.missing_images == ("https://img/refused-1.jpg", "https://img/refused-2.jpg")
    assert done.processed_images == 1 and world.failed() == {}
    assert [event.attempt for event in world.submitted()] == [1, 1, 1]  # a refusal uses no attempt


def test_a_batch_stuck_cancelling_long_after_the_cancel_sends_its_lots_again(world: World) -> None:
    # OpenAI: a batch is `cancelling` for up to 10 minutes. One that stays so was waited on for
    # good, its lots with it.
    world.batches.finish, world.batches.stuck_cancelling = None, True
    world.batches.created_at = time.time() - world.settings.max_batch_age_s - 60  # past its age
    world.store.add(lots(2))
    world.rounds(2)
    [stuck] = world.batches.batches.values()
    assert stuck["status"] == "cancelling"
    world.rounds(2)
    assert set(world.store.statuses().values()) == {"submitted"} and len(world.batches.batches) == 1
    stuck["cancelling_at"] -= 2 * 3600  # still cancelling two hours after the cancel
    world.batches.finish, world.batches.created_at = "completed", time.time()
    world.rounds(3)
    assert world.completed() == ["job-1-lot-0", "job-1-lot-1"] and len(world.batches.batches) == 2


def test_an_unusable_answer_fails_the_lot_without_a_retry_reporting_what_it_used(world: World) -> None:
    # Stopped by the content filter: asked again, it would end the same (one cut off at its
    # budget is asked again with more room: test_vision_cut_off.py).
    world.batches.answer = lambda custom_id, body: {
        "status": "incomplete", "incomplete_details": {"reason": "content_filter"},
        "usage": {"input_tokens": 900, "output_tokens": 4000,
                  "output_tokens_details": {"reasoning_tokens": 4000}}}
    world.store.add(lots(1))
    world.rounds(3)
    assert "incomplete" in world.failed()["job-1-lot-0"] and len(world.submitted()) == 1
    # Billed though it could not be used: the job's usage counts it (it said nothing of it).
    [failed] = world.of(LotFailed)
    assert failed.usage is not None and failed.usage.model == "o4-mini"
    assert (failed.usage.input_tokens, failed.usage.output_tokens) == (900, 4000)


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
    world.batches.created_at = time.time() - world.settings.max_batch_age_s - 60  # just past its age
    world.store.add(lots(3))
    world.rounds(2)
    assert len(world.batches.cancelled) == 1 and world.completed() == ["job-1-lot-0"]
    world.batches.finish, world.batches.created_at = "completed", 4_000_000_000.0
    world.rounds(2)
    assert len(world.completed()) == 3 and len(world.submitted()[1].lot_ids) == 2

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


def test_a_shard_is_collected_with_the_lots_as_its_process_prepared_them(world: World) -> None:
    [lot] = lots(1)
    world.store.add([lot.with_work(lot.work.model_copy(
        update={"image_urls": ("https://img/ok.jpg", "https://img/dead.jpg")}))])
    world.rounds(2)
    assert world.store.collected_from_sent == [True]  # the work was not read back from the store
    [event] = world.of(VisionCompleted)
    assert (event.processed_images, event.missing_images) == (1, ("https://img/dead.jpg",))
    assert world.stage.sent == {}


def test_a_shard_sent_before_a_restart_is_collected_with_the_lots_read_from_the_store(world: World) -> None:
    world.batches.finish = None
    world.store.add(lots(2))
    world.rounds()
    world.restart()
    world.batches.finish = "completed"
    world.rounds()
    assert world.store.collected_from_sent == [False]
    assert world.completed() == ["job-1-lot-0", "job-1-lot-1"]


def test_a_stage_keeps_the_sent_lots_of_its_latest_shards_up_to_a_bound(world: World) -> None:
    shard_size = SENT_LOTS_KEPT // 4
    for n in range(6):
        world.stage.remember_sent(f"shard-{n}", lots(shard_size, job_id=f"job-{n}"))
    assert list(world.stage.sent) == ["shard-2", "shard-3", "shard-4", "shard-5"]
    world.stage.remember_sent("shard-big", lots(SENT_LOTS_KEPT))
    assert list(world.stage.sent) == ["shard-big"]


def test_an_unreadable_result_line_sends_its_lot_again_and_the_others_are_settled(world: World) -> None:
    # One line we cannot read (cut short, not an object, no custom_id) failed the whole collection,
    # every round, for good: the shard stayed submitted and its job never finished.
    read = world.batches.iter_file_lines
    garbled: list[bytes] = []

    async def with_bad_lines(file_id: str) -> AsyncIterator[bytes]:
        async for line in read(file_id):
            if b"job-1-lot-1" in line and not garbled:
                garbled.append(line)
                yield line[:40]
                yield b"[1, 2]"
                yield b'{"response": {"status_code": 200, "body": {}}}'
                continue
            yield line

    world.batches.iter_file_lines = with_bad_lines  # type: ignore[method-assign]
    world.store.add(lots(3))
    world.rounds(4)
    assert garbled and world.completed() == ["job-1-lot-0", "job-1-lot-1", "job-1-lot-2"]
    assert [b.lot_ids for b in world.submitted()][1] == ("job-1-lot-1",)
    assert {s.status for s in world.store.shards_by_id.values()} == {"collected"}


def test_a_batch_in_a_status_not_in_the_api_description_is_not_paid_for_twice(world: World) -> None:
    world.batches.finish = "paused"  # not one of the 8 statuses the OpenAPI description lists
    world.store.add(lots(2))
    world.rounds(4)
    [event] = world.submitted()
    assert set(world.store.statuses().values()) == {"submitted"} and world.completed() == []
    world.batches.batches[event.batch_id]["status"], world.batches.finish = "in_progress", "completed"
    world.rounds(2)
    assert world.completed() == ["job-1-lot-0", "job-1-lot-1"] and len(world.submitted()) == 1


def test_a_result_file_openai_no_longer_has_sends_its_lots_again(world: World) -> None:
    # Deleted from the dashboard, or past its 30 days: the 404 failed the collection every round,
    # and the shard's job never finished.
    world.batches.deleted_files.add("batch-1-output_file_id")  # the first batch's output
    world.store.add(lots(2))
    world.rounds(4)
    assert world.completed() == ["job-1-lot-0", "job-1-lot-1"] and len(world.submitted()) == 2
    assert {s.status for s in world.store.shards_by_id.values()} == {"collected"}


def test_a_shard_is_never_bigger_than_its_batch_submitted_event_can_be(world: World) -> None:
    # 45,000 lots of 240-character ids: their VisionBatchSubmitted was over Kafka's 10 MiB, so the
    # batch was created and paid, its event refused on every round, and the job never finished.
    # (With no token budget, as an operator at a high tier sets it; the default keeps shards small.)
    world.settings = world.settings.model_copy(update={"enqueued_token_limit": 0})
    world.restart()
    world.batches.finish = None
    world.store.add([replace(lot, lot_id=lot.lot_id.ljust(240, "x")) for lot in lots(45_000)])
    world.rounds(2)
    submitted = world.submitted()
    assert len(submitted) >= 2
    assert sum(len(event.lot_ids) for event in submitted) == 45_000
    assert set(world.store.statuses().values()) == {"submitted"}
    assert len(world.batches.batches) == len(submitted), "a batch was created without its event"


def test_a_collected_batchs_files_are_deleted_at_openai(world: World) -> None:
    # Kept, every lot's request and answers (signed image URLs, descriptions) stayed at OpenAI for
    # 30 days, about 25 KB a lot against the project's storage limit.
    world.batches.answer = lambda custom_id, body: (400, "invalid_image_url") if custom_id.endswith("-1") \
        else described(custom_id, body)
    world.store.add(lots(3))
    world.rounds(2)
    [batch] = world.batches.batches.values()
    files = {batch["input_file_id"], batch["output_file_id"], batch["error_file_id"]}
    assert files <= set(world.batches.deleted)
    assert world.batches.files == {}


def test_a_file_openai_no_longer_has_is_no_error_when_it_is_deleted(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    # Deleted in the dashboard or past its 30 days, it answers the delete 404: what was asked, where
    # it was a warning and an OpenAI error counted.
    world.batches.deleted_files.add("file-0")  # the first batch's input file
    world.store.add(lots(2))
    labels = {"stage": "vision", "operation": "files", "kind": "bad_request"}
    before = REGISTRY.get_sample_value("lotlens_openai_errors_total", labels) or 0.0
    with caplog.at_level(logging.WARNING):
        world.rounds(2)
    assert world.completed() == ["job-1-lot-0", "job-1-lot-1"]
    assert (REGISTRY.get_sample_value("lotlens_openai_errors_total", labels) or 0.0) == before
    assert [r.getMessage() for r in caplog.records if "file-0" in r.getMessage()] == []
