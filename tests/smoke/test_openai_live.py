"""A live check against the real OpenAI API (`make smoke-openai`, with OPENAI_API_KEY set).

The same stage code the integration tests drive against the stand-in: a 2-lot batch job (one lot
with an image nobody can fetch) in 10 languages through the vision and translation batches, and
one synchronous lot through the Responses API. It spends a few cents and can take as long as
OpenAI's batches do (usually minutes; `LOTLENS_SMOKE_TIMEOUT_S`, default 2 h).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest
from sqlalchemy import Engine

from lotlens_common.envelope import Envelope
from lotlens_common.events import LotSubmitted, TranslationCompleted, VisionCompleted
from lotlens_common.images import ImageCheck, check_images
from lotlens_common.model.openai_client import OpenAIBatches, call_responses, make_openai_client
from lotlens_common.model.translation import parse_translation_response, translation_request_body
from lotlens_common.model.vision import parse_vision_response, vision_request_body
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.runner import housekeep, step
from lotlens_common.stage.service import postgres_stage
from lotlens_common.stage.work import StageSpec
from lotlens_common.urls import guarded_async_client
from lotlens_translator import handlers as translator_handlers
from lotlens_translator.translation_stage import TranslationStage
from lotlens_vision_batcher import handlers as vision_handlers
from lotlens_vision_batcher.vision_stage import VisionStage
from tests.conftest import new_id
from tests.integration.stage.helpers import job_events, open_lots

KEY = os.environ.get("OPENAI_API_KEY", "")
pytestmark = pytest.mark.skipif(
    not KEY or os.environ.get("LOTLENS_SMOKE_OPENAI") != "1",
    reason="the live OpenAI check runs only through `make smoke-openai` with OPENAI_API_KEY set")

# Overridable, so the check itself can be rehearsed against the stand-in and a local image host.
CAR = os.environ.get("LOTLENS_SMOKE_IMAGE_URL", "https://upload.wikimedia.org/wikipedia/commons/"
                     "thumb/5/5b/Car_crash_1.jpg/640px-Car_crash_1.jpg")
LOOPBACK = os.environ.get("LOTLENS_SMOKE_ALLOW_LOOPBACK") == "1"
UNREACHABLE = os.environ.get("LOTLENS_SMOKE_UNREACHABLE_URL", "https://lotlens-smoke.invalid/missing.jpg")
LANGUAGES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "ja", "zh")
STAGE = StageSettings(window_s=0.0, max_attempts=2,
                      poll_interval_s=float(os.environ.get("LOTLENS_SMOKE_POLL_S", "20")))


async def reachable(urls: Any) -> ImageCheck:
    """The vision-batcher's own image check."""
    async with guarded_async_client(LOOPBACK, 15) as http:
        return await check_images(urls, http, LOOPBACK, 8)


async def run_until_settled(settings: ServiceSettings, engine: Engine, spec: StageSpec[Any],
                            job_id: str) -> None:
    client = make_openai_client(KEY, os.environ.get("OPENAI_BASE_URL") or None, 120)
    stage = postgres_stage(engine, EventProducer(settings.kafka, "smoke"), OpenAIBatches(client), spec, STAGE)
    deadline = time.monotonic() + float(os.environ.get("LOTLENS_SMOKE_TIMEOUT_S", "7200"))
    async with client:
        await housekeep(stage)
        while open_lots(engine, spec.name, job_id):
            assert time.monotonic() < deadline, f"still open: {open_lots(engine, spec.name, job_id)}"
            assert not stage.unreadable, f"paused: {stage.unreadable}"
            await step(stage, watching=True)
            await asyncio.sleep(STAGE.poll_interval_s)


def test_a_two_lot_batch_job_in_ten_languages_and_a_synchronous_lot_against_openai(
        settings: ServiceSettings, engine: Engine) -> None:
    job_id = new_id("smoke-")
    vision_handlers.handle(engine, None, [Envelope(client_id="smoke", event=LotSubmitted(
        job_id=job_id, lot_id=f"lot-{i}", seq=i, total_lots=2, languages=LANGUAGES,
        additional_info="Hatchback, front collision, airbags deployed",
        image_urls=(CAR, UNREACHABLE) if i == 0 else (CAR,))) for i in range(2)])
    asyncio.run(run_until_settled(settings, engine, VisionStage(
        settings.topics.vision, settings.models, reachable), job_id))
    described = [e for e in job_events(settings, settings.topics.vision, job_id, 3)
                 if isinstance(e.event, VisionCompleted)]
    assert len(described) == 2, [e.event for e in job_events(settings, settings.topics.vision, job_id, 3)]
    by_lot = {e.event.lot_id: e.event for e in described if isinstance(e.event, VisionCompleted)}
    assert by_lot["lot-0"].missing_images == (UNREACHABLE,) and by_lot["lot-1"].processed_images == 1

    translator_handlers.handle(engine, EventProducer(settings.kafka, "smoke"), described,
                               topic=settings.topics.translation)
    asyncio.run(run_until_settled(settings, engine, TranslationStage(
        settings.topics.translation, settings.models), job_id))
    translated = [e.event for e in job_events(settings, settings.topics.translation, job_id, 3)
                  if isinstance(e.event, TranslationCompleted)]
    assert len(translated) == 2
    for event in translated:
        assert list(event.descriptions) == list(LANGUAGES)
        assert all(text.startswith("<p>") for text in event.descriptions.values())

    async def synchronous() -> dict[str, str]:
        async with make_openai_client(KEY, os.environ.get("OPENAI_BASE_URL") or None, 120) as client:
            english = parse_vision_response(await call_responses(
                client, vision_request_body("Sedan, rear-ended", [CAR], settings.models)))
            body = translation_request_body(english, LANGUAGES, settings.models)
            return parse_translation_response(await call_responses(client, body), LANGUAGES, english)

    assert set(asyncio.run(synchronous())) == set(LANGUAGES) - {"en"}
