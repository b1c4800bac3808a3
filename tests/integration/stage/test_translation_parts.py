"""The translation stage with more text than one answer may hold (gpt-4.1-mini writes at most
32,768 tokens): the languages go in parts, and the lot completes with all of them; against the
stand-in, real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine

from lotlens_common.envelope import Envelope
from lotlens_common.events import LotFailed, TranslationBatchSubmitted, TranslationCompleted, VisionCompleted
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_translator import handlers as translator_handlers
from lotlens_translator.translation_stage import TranslationStage
from tests.conftest import new_id
from tests.integration.stage.helpers import drive, job_events
from tests.standin import Standin

pytestmark = pytest.mark.integration

# About 15,000 characters of English (what o4-mini writes in its 4,000 output tokens): nine
# languages of it are about 34,000 tokens, more than one answer holds.
SENTENCE = "The front bumper is dented and the left headlight is cracked. "
ENGLISH = "<p>" + (SENTENCE * 240).strip() + "</p>"
NINE = ("de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da")


def described(settings: ServiceSettings, engine: Engine, job_id: str) -> None:
    translator_handlers.handle(engine, EventProducer(settings.kafka, "t"), topic=settings.topics.translation,
                               envelopes=[Envelope(client_id="c1", event=VisionCompleted(
                                   job_id=job_id, lot_id="long", english_html=ENGLISH,
                                   languages=("en", *NINE), total_lots=1, processed_images=3,
                                   missing_images=()))])


def test_a_long_description_into_nine_languages_completes_with_every_language(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id = new_id("job-")
    described(settings, engine, job_id)
    spec = TranslationStage(settings.topics.translation, settings.models, billed_share=0.5)
    asyncio.run(drive(settings, engine, standin, spec, job_id, seconds=60))

    events = [e.event for e in job_events(settings, settings.topics.translation, job_id, 2)]
    failed = [e.reason for e in events if isinstance(e, LotFailed)]
    assert failed == []
    [done] = [e for e in events if isinstance(e, TranslationCompleted)]
    assert list(done.descriptions) == ["en", *NINE]
    for code in NINE:
        assert done.descriptions[code] == f"<p>[{code}] {ENGLISH[3:]}"
    # The parts' answers together: every language's text was written, and priced.
    assert done.usage is not None and done.usage.output_tokens > 9 * len(ENGLISH) // 4
    assert done.usage.estimated_cost_usd is not None and done.usage.model == "gpt-4.1-mini"
    sent = [e for e in events if isinstance(e, TranslationBatchSubmitted)]
    assert len(sent) > 1


def test_a_part_that_fails_for_good_fails_the_lot_with_its_reason(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # Danish always comes back untranslated: its part uses up the lot's attempts.
    standin.faults(untranslated_language="da")
    job_id = new_id("job-")
    described(settings, engine, job_id)
    spec = TranslationStage(settings.topics.translation, settings.models, billed_share=0.5)
    asyncio.run(drive(settings, engine, standin, spec, job_id, seconds=60))

    events = [e.event for e in job_events(settings, settings.topics.translation, job_id, 2)]
    assert not [e for e in events if isinstance(e, TranslationCompleted)]
    [failed] = [e for e in events if isinstance(e, LotFailed)]
    assert failed.stage == "translation" and failed.processed_images == 3
    assert "(da: the English text, untranslated)" in failed.reason, failed.reason
