"""The translation stage with more text than one answer may hold (gpt-4.1-mini writes at most
32,768 tokens): the languages go in parts, and the lot completes with all of them; against the
stand-in, real Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine

from lotlens_common.envelope import Envelope
from lotlens_common.events import LotFailed, TranslationBatchSubmitted, TranslationCompleted, VisionCompleted
from lotlens_common.model.openai_client import make_openai_client
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.service import batches_api, postgres_stage
from lotlens_common.stage.submit import flush_due
from lotlens_translator import handlers as translator_handlers
from lotlens_translator.translation_stage import TranslationStage
from tests.conftest import new_id
from tests.integration.stage.helpers import STAGE, drive, job_events
from tests.standin import Standin

pytestmark = pytest.mark.integration

# About 15,000 characters of English (what o4-mini writes in its 4,000 output tokens): nine
# languages of it are about 34,000 tokens, more than one answer holds.
SENTENCE = "The front bumper is dented and the left headlight is cracked. "
ENGLISH = "<p>" + (SENTENCE * 240).strip() + "</p>"
NINE = ("de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da")


def described(settings: ServiceSettings, engine: Engine, job_id: str, english: str = ENGLISH) -> None:
    translator_handlers.handle(engine, EventProducer(settings.kafka, "t"), topic=settings.topics.translation,
                               envelopes=[Envelope(client_id="c1", event=VisionCompleted(
                                   job_id=job_id, lot_id="long", english_html=english,
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


# About 4,000 characters: nine languages of it fit one answer of 32,768 tokens, not one of 10,000.
MEDIUM = "<p>" + (SENTENCE * 64).strip() + "</p>"


async def submit_then_collect(settings: ServiceSettings, engine: Engine, standin: Standin, job_id: str,
                              ceilings: tuple[int, int]) -> None:
    """The lot's first request sent with one output ceiling; the operator changes it and restarts
    the translator before the batch is collected; the rest done with the new one."""
    before, after = (TranslationStage(settings.topics.translation, settings.models.model_copy(
        update={"translation_max_output_tokens": ceiling}), billed_share=0.5) for ceiling in ceilings)
    client = make_openai_client("test", standin.base_url, 10)
    async with client:
        sending = postgres_stage(engine, EventProducer(settings.kafka, "test"),
                                 batches_api(client, False, STAGE), before, STAGE)
        assert await flush_due(sending)
    await drive(settings, engine, standin, after, job_id, seconds=60)


@pytest.mark.parametrize("ceilings", [(10_000, 32_768), (32_768, 10_000)], ids=["raised", "lowered"])
def test_a_part_is_read_back_as_it_was_sent_after_the_output_ceiling_changed(
        settings: ServiceSettings, engine: Engine, standin: Standin, ceilings: tuple[int, int]) -> None:
    # The part was worked out again from the settings when its answer was read: raised, the
    # answer to three languages was read as one to all nine and the lot failed ("lacks language");
    # lowered, six of the nine languages answered were dropped and translated (billed) again.
    job_id = new_id("job-")
    described(settings, engine, job_id, MEDIUM)
    asyncio.run(submit_then_collect(settings, engine, standin, job_id, ceilings))

    events = [e.event for e in job_events(settings, settings.topics.translation, job_id, 2)]
    assert [e.reason for e in events if isinstance(e, LotFailed)] == []
    [done] = [e for e in events if isinstance(e, TranslationCompleted)]
    assert list(done.descriptions) == ["en", *NINE]
    sent = [e for e in events if isinstance(e, TranslationBatchSubmitted)]
    # Three languages, then the other six in one request; or all nine in the one sent.
    assert len(sent) == (2 if ceilings[0] < ceilings[1] else 1)
