"""What the stage integration tests share: lots in, the stage driven, events and rows read back."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from lotlens_common.envelope import Envelope
from lotlens_common.events import Event, JobSubmitted, LotSubmitted, VisionCompleted
from lotlens_common.images import ImageCheck
from lotlens_common.model.batch_files import batch_line
from lotlens_common.model.openai_client import OpenAIBatches, make_openai_client
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.usage import Usage
from lotlens_common.model.vision import vision_request_body
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.adapters.postgres import WAITING
from lotlens_common.stage.adapters.postgres_arrivals import Arrival, enqueue_arrivals
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.record import batch_metadata
from lotlens_common.stage.recover import recover_building
from lotlens_common.stage.runner import step
from lotlens_common.stage.service import batches_api, postgres_stage
from lotlens_common.stage.work import LotWork, StageSpec, VisionWork
from lotlens_common.tables import stage_lots, stage_shards
from lotlens_result_store.handlers import handle as project
from lotlens_translator import handlers as translator_handlers
from lotlens_translator.translation_stage import TranslationStage
from lotlens_vision_batcher import handlers as vision_handlers
from lotlens_vision_batcher.vision_stage import VisionStage
from tests.conftest import new_id
from tests.events import read_events, read_to_end
from tests.standin import Standin

STAGE = StageSettings(window_s=0.0, poll_interval_s=0.1, max_attempts=2)

# Generous: two stage processes on two busy cores can take a while; too few is a failure.
BUSY_S = 180.0


def enqueue(conn: Connection, stage: str, lots: Sequence[LotWork[Any]], status: str = WAITING) -> None:
    """Lots arriving at a stage, as models (the services write their arrivals as JSON, `enqueue_arrivals`)."""
    enqueue_arrivals(conn, stage, [Arrival(lot.job_id, lot.lot_id, lot.client_id, lot.total_lots,
                                           lot.work.model_dump_json().encode()) for lot in lots], status)


async def reachable_unless_missing(urls: Sequence[str]) -> ImageCheck:
    """The image check, decided by URL (the real checker has its own tests)."""
    return ImageCheck(valid=tuple(u for u in urls if "missing" not in u),
                      unreachable=tuple(u for u in urls if "missing" in u))


def submit_lots(engine: Engine, job_id: str, notes: list[str], languages: Sequence[str] = ("en",),
                images: int = 2, client_id: str = "c1") -> None:
    envelopes = [Envelope(client_id=client_id, event=LotSubmitted(
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


@asynccontextmanager
async def runtime(settings: ServiceSettings, engine: Engine, standin: Standin,
                  stage: StageSettings = STAGE, producer: EventProducer | None = None
                  ) -> AsyncIterator[Stage[Any]]:
    """A vision stage on PostgreSQL, Kafka (through `producer`) and the stand-in, for steps a test
    calls one by one."""
    client = make_openai_client("test", standin.base_url, 10)
    async with client:
        yield postgres_stage(engine, producer or EventProducer(settings.kafka, "test"), OpenAIBatches(client),
                             vision_spec(settings), stage)


async def create_batch(rt: Stage[Any], tmp_path: Path, job_id: str, shard_id: str,
                       lot_ids: list[str]) -> dict[str, Any]:
    """A batch made the way the stage makes them, but with no shard row written for it."""
    path = tmp_path / f"{shard_id}.jsonl"
    path.write_bytes(b"".join(batch_line(lot_id, vision_request_body(
        "notes", [f"https://img.test/{job_id}/{lot_id}.jpg"], ModelSettings())) for lot_id in lot_ids))
    file_id = await rt.batches.upload_batch_file(path)
    return await rt.batches.create_batch(file_id, batch_metadata("vision", job_id, shard_id, 1))


def quota_wait_passes(engine: Engine, seconds: float) -> None:
    """`seconds` of a quota pause go by: its moments, on the shard rows, move back as much."""
    with engine.begin() as conn:
        conn.execute(text(
            "UPDATE stage_shards SET quota_paused_since = quota_paused_since - make_interval(secs => :s), "
            "       quota_retry_at = quota_retry_at - make_interval(secs => :s) "
            " WHERE quota_retry_at IS NOT NULL"), {"s": seconds})


def end_session_holding(engine: Engine, key: str) -> None:
    """End the backend that holds the advisory lock on `key`, as a PostgreSQL restart would."""
    with engine.begin() as conn:
        ended = conn.execute(text(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE l.locktype = 'advisory' "
            "AND l.granted AND l.objid::bigint = (hashtext(:key)::bigint & 4294967295)"), {"key": key}).all()
    assert ended == [(True,)], "exactly one session held the lock"


def open_lots(engine: Engine, stage: str, job_id: str) -> list[str]:
    return sorted(lot_id for lot_id, status in lot_statuses(engine, stage, job_id).items()
                  if status in (store.WAITING, store.SUBMITTED))


def lot_statuses(engine: Engine, stage: str, job_id: str) -> dict[str, str]:
    with engine.connect() as conn:
        return store.lot_statuses(conn, stage, job_id)


def job_events(settings: ServiceSettings, topic: str, job_id: str, count: int) -> list[Envelope]:
    def enough(events: list[Envelope]) -> bool:
        return len([e for e in events if e.job_id == job_id]) >= count

    assert enough(read_events(settings.kafka.bootstrap_servers, topic, enough, timeout_s=BUSY_S)), (
        f"fewer than {count} events of {job_id} on {topic}")
    # Then the whole topic: a duplicate published behind the expected events must be seen too.
    return [e for e in read_to_end(settings.kafka.bootstrap_servers, topic) if e.job_id == job_id]


def completed_lots(events: list[Envelope]) -> list[str]:
    """The lot of every VisionCompleted, duplicates kept (a set would hide a second completion)."""
    return sorted(e.event.lot_id for e in events if isinstance(e.event, VisionCompleted))



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


def submitted_shard(engine: Engine, job_id: str, batch_id: str) -> str:
    """A vision shard on record as submitted to `batch_id`, holding the job's one lot `lot-0`."""
    shard_id = new_id("vision-")
    with engine.begin() as conn:
        conn.execute(stage_shards.insert().values(
            shard_id=shard_id, stage="vision", job_id=job_id, client_id="c1", attempt=1,
            status="submitted", batch_id=batch_id, lot_count=1))
        enqueue(conn, "vision", [LotWork(job_id, "lot-0", "c1", 1, 1, VisionWork(
            additional_info="x", image_urls=("https://img.test/a.jpg",), languages=("en",)))],
            status=store.SUBMITTED)
        conn.execute(stage_lots.update().where(stage_lots.c.job_id == job_id).values(shard_id=shard_id))
    return shard_id


def billed(standin: Standin) -> dict[str, int]:
    """The tokens of every batch the stand-in ran, as its batch objects report them."""
    headers = {"Authorization": f"Bearer {standin.api_key}"} if standin.api_key else {}
    batches = standin.control.get("/v1/batches", params={"limit": 100}, headers=headers).json()["data"]
    usages = [batch["usage"] for batch in batches if batch.get("usage")]
    return {"input_tokens": sum(u["input_tokens"] for u in usages),
            "output_tokens": sum(u["output_tokens"] for u in usages),
            "reasoning_tokens": sum(u["output_tokens_details"]["reasoning_tokens"] for u in usages)}


def translate_and_project(settings: ServiceSettings, engine: Engine, standin: Standin, english: str,
                          languages: tuple[str, ...], vision_usage: Usage | None = None
                          ) -> tuple[str, list[Event]]:
    """A one-lot job described (its vision answer's usage `vision_usage`), translated by the stage,
    and every event projected by the result-store; the job id and the translation's events."""
    job_id, at = new_id("job-"), datetime(2026, 3, 1, tzinfo=UTC)
    submitted = [JobSubmitted(job_id=job_id, client_id="c1", api_version="2.0", languages=languages,
                              total_lots=1, webhook_urls=(), created_at=at,
                              estimated_completion=at + timedelta(hours=1)),
                 LotSubmitted(job_id=job_id, lot_id="long", seq=0, total_lots=1, additional_info="car",
                              image_urls=("https://img.example.com/1.jpg",), languages=languages)]
    vision = VisionCompleted(job_id=job_id, lot_id="long", english_html=english, languages=languages,
                             total_lots=1, processed_images=1, missing_images=(), usage=vision_usage)
    translator_handlers.handle(engine, EventProducer(settings.kafka, "t"), topic=settings.topics.translation,
                               envelopes=[Envelope(client_id="c1", event=vision)])
    spec = TranslationStage(settings.topics.translation, settings.models, billed_share=0.5)
    asyncio.run(drive(settings, engine, standin, spec, job_id, seconds=60))
    translated = job_events(settings, settings.topics.translation, job_id, 2)
    envelopes = [Envelope(client_id="c1", event=event) for event in (*submitted, vision)] + translated
    project(engine, EventProducer(settings.kafka, "result-store-test"), settings.topics.completions,
            envelopes)
    return job_id, [envelope.event for envelope in translated]
