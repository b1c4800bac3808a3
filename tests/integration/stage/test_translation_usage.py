"""Every token OpenAI bills for a lot's translation is in its job's usage, however the lot ends:
the translation stage against the stand-in, its events projected by the result-store, on real
Kafka and PostgreSQL. What the stand-in billed is its batches' own `usage`, as OpenAI reports it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from lotlens_common.events import LotFailed, TranslationCompleted
from lotlens_common.model.usage import Usage
from lotlens_common.settings import ServiceSettings
from tests.integration.result_store.support import job_row
from tests.integration.stage.helpers import billed, translate_and_project
from tests.standin import Standin

pytestmark = pytest.mark.integration

SENTENCE = "The front bumper is dented and the left headlight is cracked. "
# Nine languages of this text are more than one answer holds: they go in parts.
LONG = "<p>" + (SENTENCE * 240).strip() + "</p>"
NINE = ("de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da")
VISION = Usage(input_tokens=1800, output_tokens=900, reasoning_tokens=500, estimated_cost_usd=0.0014,
               model="o4-mini")


def translation_usage(engine: Engine, job_id: str) -> dict[str, Any]:
    """The translation model's part of the job's usage, as `batch-status` and `batch-results` show it."""
    job = job_row(engine, job_id)
    assert job["status"] in ("completed", "failed") and job["usage"] is not None, job
    assert job["usage"]["by_model"]["o4-mini"]["output_tokens"] == VISION.output_tokens
    return dict(job["usage"]["by_model"].get("gpt-4.1-mini", {}))


def test_a_lot_failed_after_parts_were_translated_reports_every_part_billed(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # Danish always comes back untranslated: its part uses up the lot's attempts after the other
    # parts were translated (and billed).
    standin.faults(untranslated_language="da")
    job_id, events = translate_and_project(settings, engine, standin, LONG, ("en", *NINE), VISION)
    [failed] = [e for e in events if isinstance(e, LotFailed)]
    assert not [e for e in events if isinstance(e, TranslationCompleted)]
    paid = billed(standin)
    assert paid["output_tokens"] > 8 * len(LONG) // 4  # the parts done, and Danish's answers
    reported = translation_usage(engine, job_id)
    assert {kind: reported.get(kind) for kind in paid} == paid, failed.reason


def test_a_lot_failed_in_one_part_reports_its_vision_and_its_unusable_answers(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    standin.faults(untranslated_language="de")
    job_id, events = translate_and_project(settings, engine, standin, "<p>A dent in the door.</p>",
                                           ("en", "de"), VISION)
    assert [e.stage for e in events if isinstance(e, LotFailed)] == ["translation"]
    paid = billed(standin)
    assert paid["output_tokens"] > 0
    reported = translation_usage(engine, job_id)
    assert {kind: reported.get(kind) for kind in paid} == paid


def test_a_lot_translated_in_parts_reports_exactly_what_was_billed(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id, events = translate_and_project(settings, engine, standin, LONG, ("en", *NINE), VISION)
    assert [type(e) for e in events if isinstance(e, LotFailed | TranslationCompleted)] == [
        TranslationCompleted]
    paid = billed(standin)
    reported = translation_usage(engine, job_id)
    assert {kind: reported.get(kind) for kind in paid} == paid
