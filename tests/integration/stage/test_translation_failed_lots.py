"""A lot described in English whose translation fails for good keeps what was paid for, in
`partial_descriptions` (its `descriptions` stay empty, as clients that check only the answer's code
expect): the translation stage against the stand-in, its LotFailed projected by the result-store
and read back as `batch-results`, its download, the lots pages and webhooks render it, on real
Kafka and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from lotlens_common.events import LotFailed
from lotlens_common.read_models import get_job, iter_lot_results, lot_page, lot_results_in_chunks, lots_by_id
from lotlens_common.settings import ServiceSettings
from tests.integration.stage.helpers import translate_and_project
from tests.standin import Standin

pytestmark = pytest.mark.integration

SENTENCE = "The front bumper is dented and the left headlight is cracked. "
# Nine languages of this text are more than one answer holds: they go in parts.
LONG = "<p>" + (SENTENCE * 240).strip() + "</p>"
NINE = ("de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da")


def rendered_lot(engine: Engine, job_id: str) -> dict[str, Any]:
    """The job's one lot as `batch-results` and webhooks render it, checked equal to its download's
    and its lots page's; its `descriptions` empty in every one."""
    with engine.connect() as conn:
        job = get_job(conn, job_id)
        assert job is not None and job.status == "failed", job
        [lot] = iter_lot_results(conn, job, stream=False)
        [paged], _ = lot_page(conn, job, None, 10, 0, 1 << 20)
        [by_id] = lots_by_id(conn, job, [lot["lot_id"]])
    with engine.begin() as conn:
        [streamed] = iter_lot_results(conn, job)
    [downloaded] = lot_results_in_chunks(engine, job)
    assert paged == lot == by_id == streamed == downloaded
    assert lot["descriptions"] == []
    return lot


def test_a_lot_whose_translation_lines_fail_for_good_keeps_its_english(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # The marker is in the English the vision model wrote: every translation line is a 500 error.
    english = "<p>A dent in the door. [standin:error]</p>"
    job_id, events = translate_and_project(settings, engine, standin, english, ("de", "en", "ru"))
    [failed] = [e for e in events if isinstance(e, LotFailed)]
    assert "gave up after 2 attempts" in failed.reason
    assert failed.descriptions == {"en": english}

    lot = rendered_lot(engine, job_id)
    assert lot["status"] == "failed" and lot["error_message"] == failed.reason
    assert lot["partial_descriptions"] == [{"language": "en", "damages": english}]
    assert lot["missing_languages"] == ["de", "ru"]


def test_a_lot_failed_in_one_part_keeps_the_languages_translated_before(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # Danish always comes back untranslated: its part fails after the others were translated.
    standin.faults(untranslated_language="da")
    job_id, events = translate_and_project(settings, engine, standin, LONG, ("en", *NINE))
    [failed] = [e for e in events if isinstance(e, LotFailed)]
    assert list(failed.descriptions) == ["en", *NINE[:-1]], failed.reason

    lot = rendered_lot(engine, job_id)
    assert [d["language"] for d in lot["partial_descriptions"]] == ["en", *NINE[:-1]]
    assert lot["partial_descriptions"][0]["damages"] == LONG
    assert lot["missing_languages"] == ["da"]


def test_a_lot_not_asking_for_english_gets_no_english(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id, events = translate_and_project(settings, engine, standin, "<p>A dent. [standin:error]</p>",
                                           ("de", "ru"))
    [failed] = [e for e in events if isinstance(e, LotFailed)]
    assert failed.descriptions == {}
    lot = rendered_lot(engine, job_id)
    assert lot["partial_descriptions"] == [] and lot["missing_languages"] == ["de", "ru"]
