"""The vision and translation stages against the OpenAI stand-in, real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import Engine

from lotlens_common.clock import utc_now
from lotlens_common.envelope import Envelope
from lotlens_common.events import (
    JobCancelled,
    LotFailed,
    LotSubmitted,
    TranslationBatchSubmitted,
    TranslationCompleted,
    VisionBatchSubmitted,
    VisionCompleted,
)
from lotlens_common.images import ImageCheck, check_images
from lotlens_common.model.openai_client import OpenAIBatches, make_openai_client
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.collect import watch
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.core import lifecycle
from lotlens_common.stage.runner import step
from lotlens_common.stage.service import postgres_stage
from lotlens_common.urls import guarded_async_client
from lotlens_translator import handlers as translator_handlers
from lotlens_translator.translation_stage import TranslationStage
from lotlens_vision_batcher import handlers as vision_handlers
from lotlens_vision_batcher.vision_stage import VisionStage
from tests.conftest import new_id
from tests.integration.stage.helpers import (
    completed_lots,
    drive,
    job_events,
    lot_statuses,
    open_lots,
    submit_lots,
    vision_spec,
)
from tests.standin import Standin, description, serve_standin


def test_vision_batch_sends_real_image_inputs_and_emits_one_result_per_lot(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["2019 Toyota Camry, front collision", "Honda Civic, hail"])
    asyncio.run(drive(settings, engine, standin, vision_spec(settings), job_id))

    events = job_events(settings, settings.topics.vision, job_id, 3)
    submitted = [e.event for e in events if isinstance(e.event, VisionBatchSubmitted)]
    completed = {e.event.lot_id: e.event for e in events if isinstance(e.event, VisionCompleted)}
    assert completed_lots(events) == ["lot-0", "lot-1"]
    assert len(submitted) == 1 and set(submitted[0].lot_ids) == {"lot-0", "lot-1"}
    assert completed["lot-0"].english_html == description(2, "2019 Toyota Camry, front collision")
    assert completed["lot-1"].processed_images == 2
    metadata = standin.stats()["batch_metadata"]
    assert [m["lotlens_shard_id"] for m in metadata] == [submitted[0].shard_id]
    assert metadata[0]["lotlens_job_id"] == job_id and metadata[0]["lotlens_stage"] == "vision"


def test_direct_mode_sends_the_same_requests_one_by_one_and_rides_out_rate_limits(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id = new_id("job-")
    standin.faults(rate_limit_next=2)
    submit_lots(engine, job_id, ["Camry, front collision", "Civic, hail", "F-150, rollover"])
    asyncio.run(drive(settings, engine, standin, vision_spec(settings), job_id, direct=True))

    events = job_events(settings, settings.topics.vision, job_id, 3)
    completed = {e.event.lot_id: e.event for e in events if isinstance(e.event, VisionCompleted)}
    assert completed_lots(events) == ["lot-0", "lot-1", "lot-2"]
    assert completed["lot-2"].english_html == description(2, "F-150, rollover")
    stats = standin.stats()
    assert stats["batches_created"] == 0
    assert sum(stats["direct_calls"].values()) == 5  # 3 lots + 2 answered 429 and retried


def test_a_lot_whose_images_are_all_unreachable_fails_without_a_model_call(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id = new_id("job-")
    envelopes = [Envelope(client_id="c1", event=LotSubmitted(
        job_id=job_id, lot_id="broken", seq=0, total_lots=1, additional_info="x",
        image_urls=("https://img.test/missing-1.jpg", "https://img.test/missing-2.jpg"),
        languages=("en",)))]
    vision_handlers.handle(engine, None, envelopes)
    asyncio.run(drive(settings, engine, standin, vision_spec(settings), job_id))

    failed = [e.event for e in job_events(settings, settings.topics.vision, job_id, 1)]
    assert isinstance(failed[0], LotFailed)
    assert failed[0].reason == "none of the lot's 2 images could be fetched"
    assert failed[0].missing_images == ("https://img.test/missing-1.jpg", "https://img.test/missing-2.jpg")
    assert standin.stats()["batches_created"] == 0


def test_an_image_openai_cannot_fetch_is_missing_and_the_lot_described_from_the_rest(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # The stand-in refuses it as OpenAI does: an error line, 400 invalid_image_url, naming it.
    job_id, refused = new_id("job-"), "https://img.test/standin-unfetchable-side.jpg"
    vision_handlers.handle(engine, None, [Envelope(client_id="c1", event=LotSubmitted(
        job_id=job_id, lot_id="lot-0", seq=0, total_lots=1, additional_info="Camry",
        image_urls=("https://img.test/front.jpg", refused), languages=("en",)))])
    asyncio.run(drive(settings, engine, standin, vision_spec(settings), job_id))
    events = [e.event for e in job_events(settings, settings.topics.vision, job_id, 3)]
    [done] = [event for event in events if isinstance(event, VisionCompleted)]
    assert done.processed_images == 1 and done.missing_images == (refused,)
    assert done.english_html == description(1, "Camry")
    assert [e.attempt for e in events if isinstance(e, VisionBatchSubmitted)] == [1, 1]


@pytest.mark.parametrize("direct", [False, True])
def test_an_image_openai_cannot_read_and_does_not_name_is_found_and_listed_as_missing(
        settings: ServiceSettings, engine: Engine, standin: Standin, direct: bool) -> None:
    # OpenAI's "You uploaded an unsupported image" (400 invalid_image_format, `param` null) names
    # no image: a truncated JPEG, which passes the check, failed the whole lot for good.
    job_id, unreadable = new_id("job-"), "https://img.test/standin-unsupported-rear.jpg"
    vision_handlers.handle(engine, None, [Envelope(client_id="c1", event=LotSubmitted(
        job_id=job_id, lot_id="lot-0", seq=0, total_lots=1, additional_info="Camry",
        image_urls=("https://img.test/front.jpg", "https://img.test/side.jpg", unreadable),
        languages=("en",)))])
    async def small_images(urls: Sequence[str]) -> ImageCheck:  # 1 MB each: all three fit in 50 MB
        return ImageCheck(valid=tuple(urls), unreachable=(), sizes=dict.fromkeys(urls, 1_000_000))

    spec = VisionStage(settings.topics.vision, settings.models, small_images)
    asyncio.run(drive(settings, engine, standin, spec, job_id, direct=direct))
    events = [e.event for e in job_events(settings, settings.topics.vision, job_id, 1)]
    assert [type(event).__name__ for event in events if not isinstance(event, VisionBatchSubmitted)] == [
        "VisionCompleted"], events
    [done] = [event for event in events if isinstance(event, VisionCompleted)]
    assert done.processed_images == 2 and done.missing_images == (unreadable,)
    assert done.english_html == description(2, "Camry")


def test_an_image_host_no_resolver_can_be_asked_for_fails_the_lot_and_not_its_shard(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # Queued before intake refused such hosts: the real checker, with the system resolver (the
    # IDNA codec refuses the name before any query), once raised out of `prepare` and kept the
    # whole shard `building`, rebuilt and failing every round.
    async def real_check(urls: Sequence[str]) -> ImageCheck:
        async with guarded_async_client(False, 5) as http:
            return await check_images(urls, http, False)

    job_id = new_id("job-")
    bad = "https://img..example.com/a.jpg"
    vision_handlers.handle(engine, None, [Envelope(client_id="c1", event=LotSubmitted(
        job_id=job_id, lot_id="bad-host", seq=0, total_lots=1, additional_info="x", image_urls=(bad,),
        languages=("en",)))])
    spec = VisionStage(settings.topics.vision, settings.models, real_check)
    asyncio.run(drive(settings, engine, standin, spec, job_id))

    failed = [e.event for e in job_events(settings, settings.topics.vision, job_id, 1)]
    assert isinstance(failed[0], LotFailed) and failed[0].missing_images == (bad,)
    assert failed[0].reason == "none of the lot's 1 images could be fetched"
    assert standin.stats()["batches_created"] == 0


def test_a_description_cut_off_twice_fails_the_lot_with_no_image_processed(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # The same lot in synchronous mode reported its 2 images processed (API.md: one lot shape).
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["cut short [standin:incomplete]"])
    asyncio.run(drive(settings, engine, standin, vision_spec(settings), job_id))
    events = [e.event for e in job_events(settings, settings.topics.vision, job_id, 3)]
    [failed] = [event for event in events if isinstance(event, LotFailed)]
    # Asked once more, with twice the room (it failed at the first cut-off), and no more.
    assert len([event for event in events if isinstance(event, VisionBatchSubmitted)]) == 2
    assert failed.reason == "the response is incomplete (max_output_tokens)"
    assert failed.processed_images == 0 and failed.missing_images == ()


def test_error_lines_are_retried_per_lot_then_fail_with_the_reason(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["fine lot", "bad lot [standin:error]", "another fine lot"])
    asyncio.run(drive(settings, engine, standin, vision_spec(settings), job_id))

    events = job_events(settings, settings.topics.vision, job_id, 5)
    results = {e.event.lot_id: e.event for e in events if isinstance(e.event, VisionCompleted | LotFailed)}
    assert isinstance(results["lot-0"], VisionCompleted)
    assert isinstance(results["lot-2"], VisionCompleted)
    failure = results["lot-1"]
    assert isinstance(failure, LotFailed) and "gave up after 2 attempts" in failure.reason
    retries = [e.event for e in events if isinstance(e.event, VisionBatchSubmitted)]
    assert [b.lot_ids for b in retries][1] == ("lot-1",)  # only the failed lot was resubmitted


def test_an_expired_batch_keeps_its_partial_results_and_resubmits_only_the_rest(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id = new_id("job-")
    standin.faults(batch_outcome="expired", batch_outcome_count=1)
    submit_lots(engine, job_id, [f"lot {i}" for i in range(4)])
    asyncio.run(drive(settings, engine, standin, vision_spec(settings), job_id))

    events = job_events(settings, settings.topics.vision, job_id, 6)
    batches = [e.event for e in events if isinstance(e.event, VisionBatchSubmitted)]
    assert completed_lots(events) == [f"lot-{i}" for i in range(4)]
    assert len(batches) == 2 and len(batches[1].lot_ids) == 2


@pytest.mark.parametrize("outcome", ["failed", "cancelled"])
def test_a_batch_that_ends_failed_or_cancelled_on_openais_side_is_resubmitted_and_completes(
        settings: ServiceSettings, engine: Engine, standin: Standin, outcome: str) -> None:
    job_id = new_id("job-")
    standin.faults(batch_outcome=outcome, batch_outcome_count=1)
    submit_lots(engine, job_id, [f"lot {i}" for i in range(3)])
    asyncio.run(drive(settings, engine, standin, vision_spec(settings), job_id))

    events = job_events(settings, settings.topics.vision, job_id, 5)
    batches = [e.event for e in events if isinstance(e.event, VisionBatchSubmitted)]
    completed = [e.event.lot_id for e in events if isinstance(e.event, VisionCompleted)]
    assert sorted(completed) == ["lot-0", "lot-1", "lot-2"]  # each exactly once
    assert len(batches) == 2 and batches[1].attempt == 2
    assert sorted(batches[1].lot_ids) == sorted(batches[0].lot_ids)
    assert not [e for e in events if isinstance(e.event, LotFailed)]
    assert standin.stats()["batches_created"] == 2


def test_a_batch_stuck_finalizing_that_refuses_cancels_is_given_up_its_file_deleted_and_its_lots_complete(
        settings: ServiceSettings, engine: Engine, standin: Standin, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # OpenAI kept the batch `finalizing` and refused each cancel (409): past its age it was
    # cancelled again at every poll, with a traceback each time, and the job never finished. Given
    # up on, its input file (signed image URLs) then stayed at OpenAI for its 30 days. The hour
    # past its age after which it is given up on is cut to 2 s here.
    monkeypatch.setattr(lifecycle, "CANCELLING_LIMIT_S", 2.0)
    job_id = new_id("job-")
    standin.faults(batch_outcome="stuck_finalizing", batch_outcome_count=1)
    submit_lots(engine, job_id, ["a", "b"])
    stage = StageSettings(window_s=0.0, poll_interval_s=0.1, max_attempts=2, max_batch_age_s=2.0)
    with caplog.at_level(logging.INFO, logger="lotlens_common.stage"):
        asyncio.run(drive(settings, engine, standin, vision_spec(settings), job_id, stage))

    events = job_events(settings, settings.topics.vision, job_id, 4)
    batches = [e.event for e in events if isinstance(e.event, VisionBatchSubmitted)]
    assert completed_lots(events) == ["lot-0", "lot-1"]
    assert [b.attempt for b in batches] == [1, 2]
    stuck = standin.control.get(f"/v1/batches/{batches[0].batch_id}").json()
    assert stuck["status"] == "finalizing"  # OpenAI still holds it: given up on, not collected
    assert standin.control.get(f"/v1/files/{stuck['input_file_id']}").status_code == 404
    assert any("cannot be cancelled" in r.getMessage() for r in caplog.records)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_cancelling_a_job_cancels_its_running_batch_and_submits_nothing_more(
        settings: ServiceSettings, engine: Engine, tmp_path: Path) -> None:
    job_id = new_id("job-")
    with serve_standin(tmp_path / "slow", in_progress_seconds=30) as standin:
        submit_lots(engine, job_id, ["a", "b"])
        stage = StageSettings(window_s=0.0, poll_interval_s=0.1)

        async def scenario() -> None:
            client = make_openai_client("test", standin.base_url, 10)
            rt = postgres_stage(engine, EventProducer(settings.kafka, "t"), OpenAIBatches(client),
                                vision_spec(settings), stage)
            async with client:
                await step(rt, watching=False)
                vision_handlers.handle(engine, None, [Envelope(client_id="c1", event=JobCancelled(
                    job_id=job_id, cancelled_at=utc_now()))])
                for _ in range(40):
                    await watch(rt)
                    if not open_lots(engine, "vision", job_id):
                        return
                    await asyncio.sleep(0.1)

        asyncio.run(scenario())
        batches = standin.control.get("/v1/batches").json()["data"]
    assert len(batches) == 1 and batches[0]["status"] == "cancelled"
    assert set(lot_statuses(engine, "vision", job_id).values()) == {store.CANCELLED}


def test_the_translator_passes_english_only_lots_straight_through(
        settings: ServiceSettings, engine: Engine) -> None:
    job_id = new_id("job-")
    producer = EventProducer(settings.kafka, "t")
    described = Envelope(client_id="c1", event=VisionCompleted(
        job_id=job_id, lot_id="l1", english_html="<p>Dent.</p>", languages=("en",),
        total_lots=1, processed_images=1, missing_images=()))
    for _ in range(2):  # delivered again, as after a crash before its offset was committed
        translator_handlers.handle(engine, producer, topic=settings.topics.translation,
                                   envelopes=[described])
    events = job_events(settings, settings.topics.translation, job_id, 1)
    expected = TranslationCompleted(job_id=job_id, lot_id="l1", descriptions={"en": "<p>Dent.</p>"})
    # Once: published before the lot was recorded, and the delivery again finds it recorded (a
    # crash between the two leaves it unrecorded: published again then, under the same event id).
    assert [e.event for e in events] == [expected]


def test_translation_returns_every_language_in_the_requested_order(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id = new_id("job-")
    producer = EventProducer(settings.kafka, "t")
    translator_handlers.handle(engine, producer, topic=settings.topics.translation, envelopes=[Envelope(
        client_id="c1", event=VisionCompleted(
            job_id=job_id, lot_id=f"l{i}", english_html=f"<p>Dent {i}.</p>",
            languages=("de", "en", "pt-BR", "zh-Hant"), total_lots=2, processed_images=1, missing_images=()))
        for i in range(2)])
    spec = TranslationStage(settings.topics.translation, settings.models)
    asyncio.run(drive(settings, engine, standin, spec, job_id))

    events = job_events(settings, settings.topics.translation, job_id, 3)
    assert len([e for e in events if isinstance(e.event, TranslationBatchSubmitted)]) == 1
    done = {e.event.lot_id: e.event for e in events if isinstance(e.event, TranslationCompleted)}
    assert sorted(e.event.lot_id for e in events if isinstance(e.event, TranslationCompleted)) == ["l0", "l1"]
    assert list(done["l1"].descriptions.items()) == [
        ("de", "<p>[de] Dent 1.</p>"), ("en", "<p>Dent 1.</p>"), ("pt-BR", "<p>[pt-BR] Dent 1.</p>"),
        ("zh-Hant", "<p>[zh-Hant] 邊長見氣 1.</p>")]
    usage = done["l1"].usage  # read from the batch output line, priced at the stage's share
    assert usage is not None and usage.model == "gpt-4.1-mini" and usage.input_tokens > 0
    assert usage.estimated_cost_usd is not None and usage.estimated_cost_usd > 0
