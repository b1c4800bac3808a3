"""A cancelled job's usage counts every token OpenAI billed for its lots, once: the translation
stage against the stand-in, the cancel through the translator's consumer handler, every event
projected by the result-store, on real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from lotlens_common.clock import utc_now
from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCancelled, JobSubmitted, LotFailed, LotSubmitted, VisionCompleted
from lotlens_common.model.openai_client import OpenAIBatches, make_openai_client
from lotlens_common.model.usage import Usage
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.runner import step
from lotlens_common.stage.service import postgres_stage
from lotlens_common.stage.submit import flush_due
from lotlens_common.tables import stage_lots
from lotlens_result_store.handlers import handle
from lotlens_translator import handlers as translator_handlers
from lotlens_translator.translation_stage import TranslationStage
from tests.conftest import new_id
from tests.events import read_to_end
from tests.integration.result_store.support import job_row
from tests.integration.stage.helpers import STAGE, billed, drive, lot_statuses
from tests.standin import Standin

pytestmark = pytest.mark.integration

SENTENCE = "The front bumper is dented and the left headlight is cracked. "
# Nine languages of this text are more than one answer holds: they go in parts.
LONG = "<p>" + (SENTENCE * 240).strip() + "</p>"
LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da")
VISION = Usage(input_tokens=1800, output_tokens=900, reasoning_tokens=500, estimated_cost_usd=0.0014,
               model="o4-mini")
# The job's other lot is still at the vision stage: the lot's next part is not due before the window.
HOLD = StageSettings(window_s=3600.0, poll_interval_s=0.1, max_attempts=2)


def events_before_the_stage(job_id: str) -> list[Any]:
    """A two-lot job, one lot described (its vision answer's usage `VISION`)."""
    at = datetime(2026, 3, 1, tzinfo=UTC)
    return [JobSubmitted(job_id=job_id, client_id="c1", api_version="2.0", languages=LANGUAGES,
                         total_lots=2, webhook_urls=(), created_at=at,
                         estimated_completion=at + timedelta(hours=1)),
            *(LotSubmitted(job_id=job_id, lot_id=lot_id, seq=seq, total_lots=2, additional_info="car",
                           image_urls=("https://img.example.com/1.jpg",), languages=LANGUAGES)
              for seq, lot_id in enumerate(("long", "other"))),
            VisionCompleted(job_id=job_id, lot_id="long", english_html=LONG, languages=LANGUAGES,
                            total_lots=2, processed_images=1, missing_images=(), usage=VISION)]


def translated_languages(engine: Engine, job_id: str) -> int:
    with engine.connect() as conn:
        work = conn.execute(select(stage_lots.c.work).where(
            stage_lots.c.stage == "translation", stage_lots.c.job_id == job_id)).scalar_one()
    return len(work.get("translated", {}))


async def until_between_parts(settings: ServiceSettings, engine: Engine, standin: Standin,
                              spec: TranslationStage, job_id: str) -> None:
    """Send the lot's first part, collect it, and leave the lot waiting in the queue for its next."""
    client = make_openai_client("test", standin.base_url, 10)
    producer = EventProducer(settings.kafka, "test")
    async with client:
        await flush_due(postgres_stage(engine, producer, OpenAIBatches(client), spec, STAGE))
        holding = postgres_stage(engine, producer, OpenAIBatches(client), spec, HOLD)
        deadline = time.monotonic() + 60
        while not translated_languages(engine, job_id):
            assert time.monotonic() < deadline, lot_statuses(engine, "translation", job_id)
            await step(holding, watching=True)
            await asyncio.sleep(0.1)
    assert lot_statuses(engine, "translation", job_id) == {"long": "waiting"}


def test_a_lot_waiting_for_its_next_part_when_its_job_is_cancelled_reports_the_parts_billed(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id = new_id("job-")
    before = [Envelope(client_id="c1", event=event) for event in events_before_the_stage(job_id)]
    producer = EventProducer(settings.kafka, "t")
    translator_handlers.handle(engine, producer, topic=settings.topics.translation, envelopes=before[-1:])
    spec = TranslationStage(settings.topics.translation, settings.models, billed_share=0.5)
    asyncio.run(until_between_parts(settings, engine, standin, spec, job_id))

    cancel = Envelope(client_id="c1", event=JobCancelled(job_id=job_id, cancelled_at=utc_now()))
    translator_handlers.handle(engine, producer, topic=settings.topics.translation, envelopes=[cancel])
    # Delivered again (a rebalance before the offset was stored): nothing is reported twice.
    translator_handlers.handle(engine, producer, topic=settings.topics.translation, envelopes=[cancel])
    asyncio.run(drive(settings, engine, standin, spec, job_id, stage=HOLD))
    handle(engine, EventProducer(settings.kafka, "result-store-test"), settings.topics.completions,
           [*before, cancel])
    translated = [e for e in read_to_end(settings.kafka.bootstrap_servers, settings.topics.translation)
                  if e.job_id == job_id]
    handle(engine, EventProducer(settings.kafka, "result-store-test"), settings.topics.completions,
           translated)

    paid = billed(standin)
    assert paid["output_tokens"] > 0  # the first part's answer
    job = job_row(engine, job_id)
    assert job["status"] == "cancelled" and job["usage"] is not None, job
    assert job["usage"]["by_model"]["o4-mini"]["output_tokens"] == VISION.output_tokens
    reported = job["usage"]["by_model"].get("gpt-4.1-mini", {})
    assert {kind: reported.get(kind) for kind in paid} == paid
    assert lot_statuses(engine, "translation", job_id) == {"long": "cancelled"}
    [failed] = [e.event for e in translated if isinstance(e.event, LotFailed)]
    assert "cancelled" in failed.reason, failed.reason
