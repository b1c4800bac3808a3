"""The vision and translation stages against the OpenAI stand-in, real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

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
from lotlens_common.images import ImageCheck
from lotlens_common.kafka import EventProducer
from lotlens_common.model.openai_client import OpenAIBatches, make_openai_client
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.collect import watch
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.runner import step
from lotlens_common.stage.service import batches_api, postgres_stage
from lotlens_common.stage.submit import recover_building
from lotlens_common.stage.work import LotWork, StageSpec, VisionWork
from lotlens_common.tables import stage_lots, stage_shards
from lotlens_translator import handlers as translator_handlers
from lotlens_translator.translation_stage import TranslationStage
from lotlens_vision_batcher import handlers as vision_handlers
from lotlens_vision_batcher.vision_stage import VisionStage
from tests.conftest import ROOT, new_id
from tests.events import read_events, read_to_end
from tests.servers import image_host
from tests.standin import Standin, serve_standin

STAGE = StageSettings(window_s=0.0, poll_interval_s=0.1, max_attempts=2)


@pytest.fixture()
def standin(tmp_path: Path) -> Iterator[Standin]:
    with serve_standin(tmp_path / "standin") as running:
        yield running


async def reachable_unless_missing(urls: Sequence[str]) -> ImageCheck:
    """The image check, decided by URL (the real checker has its own tests)."""
    return ImageCheck(valid=tuple(u for u in urls if "missing" not in u),
                      unreachable=tuple(u for u in urls if "missing" in u))


def submit_lots(engine: Engine, job_id: str, notes: list[str], languages: Sequence[str] = ("en",),
                images: int = 2) -> None:
    envelopes = [Envelope(client_id="c1", event=LotSubmitted(
        job_id=job_id, lot_id=f"lot-{i}", seq=i, total_lots=len(notes), additional_info=note,
        image_urls=tuple(f"https://img.test/{job_id}/{i}-{k}.jpg" for k in range(images)),
        languages=tuple(languages))) for i, note in enumerate(notes)]
    vision_handlers.handle(engine, None, envelopes)


def vision_spec(settings: ServiceSettings) -> VisionStage:
    return VisionStage(settings.topics.vision, settings.models, reachable_unless_missing)


async def drive(settings: ServiceSettings, engine: Engine, standin: Standin, spec: StageSpec[Any],
                job_id: str, stage: StageSettings = STAGE, seconds: float = 20.0,
                direct: bool = False) -> None:
    """Run the stage's flush and watch steps until no lot of the job is waiting or submitted."""
    client = make_openai_client("test", standin.base_url, 10)
    rt = postgres_stage(engine, EventProducer(settings.kafka, "test"),
                        batches_api(client, direct, stage), spec, stage)
    deadline = time.monotonic() + seconds
    async with client:
        await recover_building(rt)
        while time.monotonic() < deadline:
            await step(rt, watching=True)
            if not open_lots(engine, spec.name, job_id):
                return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"lots still open: {open_lots(engine, spec.name, job_id)}")


def open_lots(engine: Engine, stage: str, job_id: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(stage_lots.c.lot_id).where(
            stage_lots.c.stage == stage, stage_lots.c.job_id == job_id,
            stage_lots.c.status.in_([store.WAITING, store.SUBMITTED]))).scalars())


def lot_statuses(engine: Engine, stage: str, job_id: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(stage_lots.c.lot_id, stage_lots.c.status).where(
            stage_lots.c.stage == stage, stage_lots.c.job_id == job_id))
        return {row.lot_id: row.status for row in rows}


def job_events(settings: ServiceSettings, topic: str, job_id: str, count: int) -> list[Envelope]:
    def enough(events: list[Envelope]) -> bool:
        return len([e for e in events if e.job_id == job_id]) >= count

    # Generous: two stage processes on two busy cores can take a while; too few is a failure.
    assert enough(read_events(settings.kafka.bootstrap_servers, topic, enough, timeout_s=180)), (
        f"fewer than {count} events of {job_id} on {topic}")
    # Then the whole topic: a duplicate published behind the expected events must be seen too.
    return [e for e in read_to_end(settings.kafka.bootstrap_servers, topic) if e.job_id == job_id]


def completed_lots(events: list[Envelope]) -> list[str]:
    """The lot of every VisionCompleted, duplicates kept (a set would hide a second completion)."""
    return sorted(e.event.lot_id for e in events if isinstance(e.event, VisionCompleted))


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
    assert completed["lot-0"].english_html == (
        "<p>Standin vision: 2 image(s) reviewed. 2019 Toyota Camry, front collision</p>")
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
    assert completed["lot-2"].english_html == "<p>Standin vision: 2 image(s) reviewed. F-150, rollover</p>"
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
    translator_handlers.handle(engine, producer, topic=settings.topics.translation, envelopes=[Envelope(
        client_id="c1", event=VisionCompleted(
            job_id=job_id, lot_id="l1", english_html="<p>Dent.</p>", languages=("en",),
            total_lots=1, processed_images=1, missing_images=()))])
    [event] = [e.event for e in job_events(settings, settings.topics.translation, job_id, 1)]
    assert event == TranslationCompleted(job_id=job_id, lot_id="l1", descriptions={"en": "<p>Dent.</p>"})


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
        ("zh-Hant", "<p>[zh-Hant] Dent 1.</p>")]
    usage = done["l1"].usage  # read from the batch output line, priced at the stage's share
    assert usage is not None and usage.model == "gpt-4.1-mini" and usage.input_tokens > 0
    assert usage.estimated_cost_usd is not None and usage.estimated_cost_usd > 0


def stage_env(settings: ServiceSettings, standin: Standin, **extra: str) -> dict[str, str]:
    """Environment for a vision-batcher process on this test's topics and stand-in."""
    return {**os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "DATABASE_URL": settings.database.database_url,
            "KAFKA_GROUP_PREFIX": new_id("g"), "KAFKA_SESSION_TIMEOUT_MS": "6000",
            **{f"LOTLENS_TOPIC_{name.upper()}": getattr(settings.topics, name)
               for name in ("submissions", "vision", "translation", "completions", "webhooks",
                            "dead_letter")},
            "LOTLENS_ALLOW_LOOPBACK_URLS": "true",
            "LOTLENS_STAGE__WINDOW_S": "0", "LOTLENS_STAGE__POLL_INTERVAL_S": "0.2",
            "OPENAI_API_KEY": "test", "OPENAI_BASE_URL": standin.base_url, **extra}


def publish_lots(settings: ServiceSettings, job_id: str, images: str, count: int) -> None:
    producer = EventProducer(settings.kafka, "t")
    producer.publish_many(settings.topics.submissions, [Envelope(client_id="c1", event=LotSubmitted(
        job_id=job_id, lot_id=f"lot-{i}", seq=i, total_lots=count, additional_info=f"car {i}",
        image_urls=(f"{images}/{i}.png",), languages=("en",))) for i in range(count)])
    producer.flush()


def test_two_instances_share_a_job_without_duplicating_a_batch(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id = new_id("job-")
    env = stage_env(settings, standin, LOTLENS_STAGE__MAX_REQUESTS_PER_BATCH="10")
    command = [sys.executable, "-m", "lotlens_vision_batcher"]
    with image_host() as images:
        instances = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) for _ in range(2)]
        try:
            publish_lots(settings, job_id, images, 60)
            # Completions, not a count of events: how many batches the lots make depends on timing.
            events = [e for e in read_events(
                settings.kafka.bootstrap_servers, settings.topics.vision,
                lambda seen: len({e.event.lot_id for e in seen if e.job_id == job_id
                                  and isinstance(e.event, VisionCompleted)}) >= 60,
                timeout_s=120) if e.job_id == job_id]
        finally:
            for instance in instances:
                instance.terminate()
                instance.wait(timeout=30)
    batches = {e.event.batch_id: e.event for e in events if isinstance(e.event, VisionBatchSubmitted)}
    lots_in_batches = [lot for batch in batches.values() for lot in batch.lot_ids]
    assert sorted(lots_in_batches) == sorted(f"lot-{i}" for i in range(60))  # each lot once
    assert standin.stats()["batches_created"] == len(batches)
    assert completed_lots(events) == sorted(lots_in_batches)


@pytest.mark.parametrize("fault_point", ["vision.after_shard_claimed", "vision.after_batch_created",
                                         "vision.after_batch_published"])
def test_a_crash_around_batch_creation_never_loses_or_duplicates_the_batch(
        settings: ServiceSettings, engine: Engine, standin: Standin, fault_point: str) -> None:
    job_id = new_id("job-")
    with image_host() as images:
        crash_and_restart(settings, stage_env(settings, standin), job_id, images, fault_point)
    shards = {m["lotlens_shard_id"] for m in standin.stats()["batch_metadata"]}
    assert standin.stats()["batches_created"] == len(shards) == 1
    assert json.dumps(lot_statuses(engine, "vision", job_id), sort_keys=True) == json.dumps(
        {f"lot-{i}": store.DONE for i in range(3)}, sort_keys=True)


def crash_and_restart(settings: ServiceSettings, env: dict[str, str], job_id: str, images: str,
                      fault_point: str) -> None:
    """Run the vision-batcher until it dies at the fault point, then a healthy one to the end."""
    publish_lots(settings, job_id, images, 3)
    command = [sys.executable, "-m", "lotlens_vision_batcher"]
    crashed = subprocess.run(command, cwd=ROOT, env={**env, "LOTLENS_FAULT_AT": fault_point},
                             timeout=60, capture_output=True)
    assert crashed.returncode == -9, crashed.stderr.decode()[-2000:]
    survivor = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        events = job_events(settings, settings.topics.vision, job_id, 4)
    finally:
        survivor.terminate()
        survivor.wait(timeout=30)
    assert completed_lots(events) == ["lot-0", "lot-1", "lot-2"]


def test_a_batch_openai_no_longer_knows_is_resubmitted_and_does_not_block_other_shards(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    lost_job, live_job = new_id("job-"), new_id("job-")
    shard_id = new_id("vision-")
    # A shard whose batch id OpenAI does not know (e.g. records restored from a backup).
    with engine.begin() as conn:
        conn.execute(stage_shards.insert().values(
            shard_id=shard_id, stage="vision", job_id=lost_job, client_id="c1", attempt=1,
            status="submitted", batch_id="batch_gone", lot_count=1))
        store.enqueue(conn, "vision", [LotWork(lost_job, "lot-0", "c1", 1, 1, VisionWork(
            additional_info="lost", image_urls=("https://img.test/a.jpg",), languages=("en",)))],
            status=store.SUBMITTED)
        conn.execute(stage_lots.update().where(stage_lots.c.job_id == lost_job).values(shard_id=shard_id))
    submit_lots(engine, live_job, ["live a"])
    asyncio.run(drive(settings, engine, standin, vision_spec(settings), live_job))
    asyncio.run(drive(settings, engine, standin, vision_spec(settings), lost_job))

    events = job_events(settings, settings.topics.vision, lost_job, 2)
    assert completed_lots(events) == ["lot-0"]
    assert len(job_events(settings, settings.topics.vision, live_job, 2)) == 2


def test_a_batch_the_key_cannot_see_pauses_the_stage_and_nothing_is_paid_for_twice(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # The old stage took a 404 for "failed" and sent the lot again: with a rotated key or another
    # project's key, every lot of the job was paid for twice.
    unseen_job, new_job, shard_id = new_id("job-"), new_id("job-"), new_id("vision-")
    with engine.begin() as conn:
        conn.execute(stage_shards.insert().values(
            shard_id=shard_id, stage="vision", job_id=unseen_job, client_id="c1", attempt=1,
            status="submitted", batch_id="batch_elsewhere", lot_count=1))
        store.enqueue(conn, "vision", [LotWork(unseen_job, "lot-0", "c1", 1, 1, VisionWork(
            additional_info="x", image_urls=("https://img.test/a.jpg",), languages=("en",)))],
            status=store.SUBMITTED)
        conn.execute(stage_lots.update().where(stage_lots.c.job_id == unseen_job).values(shard_id=shard_id))

    async def scenario() -> None:
        client = make_openai_client("test", standin.base_url, 10)
        rt = postgres_stage(engine, EventProducer(settings.kafka, "t"), OpenAIBatches(client),
                            vision_spec(settings), STAGE)
        async with client:
            await watch(rt)
            submit_lots(engine, new_job, ["arrives while paused"])
            for _ in range(3):
                await step(rt, watching=True)
            assert rt.unreadable == {shard_id: rt.unreadable[shard_id]}

    asyncio.run(scenario())
    assert standin.stats()["batches_created"] == 0
    assert lot_statuses(engine, "vision", unseen_job) == {"lot-0": store.SUBMITTED}
    assert lot_statuses(engine, "vision", new_job) == {"lot-0": store.WAITING}
