"""A lot failing at translation keeps the languages its last answer had right: the batch settler
and the synchronous describer, against in-memory answers (no connection)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx2
import orjson
import pytest

from lotlens_common.events import LotFailed
from lotlens_common.model.errors import ModelWrongLanguageError
from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage.settle import Settler
from lotlens_common.stage.work import LotWork, TranslationWork
from lotlens_gateway.validation import Submission
from lotlens_translator.translation_stage import TranslationStage
from tests.unit.test_sync_describe import LOT, describer, message

ENGLISH = "<p>A dent in the door.</p>"
GERMAN = "<p>Eine Delle in der Tür.</p>"
USAGE = {"input_tokens": 100, "output_tokens": 50, "total_tokens": 150,
         "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


def settle_wrong_russian(cancelled: bool) -> LotFailed:
    """A lot asking en, de, ru on its last attempt: the answer has German right, Russian in Latin."""
    spec = TranslationStage(topic="t", models=ModelSettings())
    stage = SimpleNamespace(spec=spec, settings=SimpleNamespace(max_attempts=3))
    shard = SimpleNamespace(shard_id="s1", job_id="j1", client_id="c")
    settler = Settler(stage, shard, cancelled=cancelled)  # type: ignore[arg-type]
    work = TranslationWork(english_html=ENGLISH, languages=("en", "de", "ru"), processed_images=1)
    lot = LotWork(job_id="j1", lot_id="L1", client_id="c", total_lots=2, attempts=3, work=work)
    settler.unusable(lot, {"output": [], "usage": USAGE},
                     ModelWrongLanguageError({"ru": "Latin script"}, {"de": GERMAN}))
    [(_, failed)] = settler.events
    assert isinstance(failed, LotFailed)
    return failed


@pytest.mark.parametrize("cancelled", [False, True])
def test_a_batch_lot_failing_on_its_last_answer_keeps_the_languages_that_answer_had_right(
        cancelled: bool) -> None:
    failed = settle_wrong_russian(cancelled)
    assert failed.descriptions == {"en": ENGLISH, "de": GERMAN}, failed.reason


def test_a_synchronous_part_whose_retry_is_refused_keeps_the_languages_its_first_answer_had_right() -> None:
    calls: list[str] = []

    def openai_api(request: httpx2.Request) -> httpx2.Response:
        body = orjson.loads(request.content)
        if "text" not in body:  # the vision call
            return httpx2.Response(200, json={"status": "completed", "output": [message(ENGLISH)]})
        calls.append("translation")
        if len(calls) == 1:  # German right, Russian the English copied
            text = orjson.dumps({"de": GERMAN, "ru": "<p>A dent in the door, left side.</p>"}).decode()
            return httpx2.Response(200, json={"status": "completed", "output": [message(text)]})
        refusal = {"message": "Invalid request", "type": "invalid_request_error", "param": None,
                   "code": "invalid_value"}
        return httpx2.Response(400, json={"error": refusal})

    async def describe() -> dict[str, Any]:
        return await describer(openai_api).describe(Submission("1.0.0", ("en", "de", "ru"), [LOT]))

    lot = asyncio.run(describe())["lots"][0]
    assert lot["status"] == "failed" and len(calls) == 2, lot
    assert lot["descriptions"] == []
    assert lot["partial_descriptions"] == [{"language": "en", "damages": ENGLISH},
                                           {"language": "de", "damages": GERMAN}]
    assert lot["missing_languages"] == ["ru"]
