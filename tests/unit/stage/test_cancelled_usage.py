"""A cancelled job's lot that was billed for answers it could not finish with (a part of its
languages, an answer it could not use) reports them: the job's usage counts every answer OpenAI
billed, cancelled or not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from lotlens_common.events import LotFailed
from lotlens_common.model.errors import ModelOutputError
from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.work import LotWork, TranslationWork, VisionWork
from lotlens_translator.translation_stage import TranslationStage
from lotlens_vision_batcher.vision_stage import VisionStage
from tests.unit.stage.conftest import World, dead_images_unreachable, lots
from tests.unit.stage.fakes import described

NINE = ("de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da")
# Too long for nine languages in one answer: three parts of three.
LONG = "<p>" + "x" * 15_000 + "</p>"
USAGE = {"input_tokens": 4000, "output_tokens": 12_000}


def translated(custom_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """A usable answer for the languages the request asks for, billed."""
    codes = body["text"]["format"]["schema"]["required"]
    text = orjson.dumps({code: f"<p>[{code}] x</p>" for code in codes}).decode()
    return {"status": "completed", "usage": USAGE, "output": [{"type": "message", "role": "assistant",
            "content": [{"type": "output_text", "text": text}]}]}


def cancelled_after_one_answer(world: World) -> None:
    """The job's batch running with one line answered when its job is cancelled."""
    world.batches.finish, world.batches.done_lines = None, 1
    world.rounds()
    world.store.cancelled.add("job-1")
    world.rounds(2)


def test_a_lot_cancelled_between_translation_parts_reports_the_parts_billed(world: World) -> None:
    # Dropped with no event, the first part's tokens never reached the job's usage.
    spec = TranslationStage("translation", ModelSettings(), billed_share=0.5)
    world.stage = Stage(spec, world.store, world.batches, world.publisher, world.settings)
    world.batches.answer = translated
    # The fake store holds any stage's work (typed for the vision stage its other tests drive).
    world.store.add([LotWork("job-1", "job-1-lot-0", "c1", 1, 0, TranslationWork(  # type: ignore[arg-type]
        english_html=LONG, languages=("en", *NINE), processed_images=2))])

    cancelled_after_one_answer(world)

    assert world.store.statuses() == {"job-1-lot-0": "cancelled"}
    [failed] = world.of(LotFailed)
    assert (failed.stage, failed.processed_images) == ("translation", 2)
    assert failed.usage is not None and failed.usage.model == spec.model()
    assert (failed.usage.input_tokens, failed.usage.output_tokens) == (4000, 12_000)
    assert "cancelled" in failed.reason and "3 of 9 languages" in failed.reason, failed.reason


def test_a_lot_cancelled_after_an_unusable_answer_reports_it_and_one_never_answered_reports_nothing(
        world: World) -> None:
    class Roomier(VisionStage):
        def retry_unusable(self, lot: LotWork[VisionWork], error: ModelOutputError) -> LotWork[VisionWork]:
            return lot.with_work(lot.work.model_copy(update={"additional_info": "more room"}))

    def cut_off(custom_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return {**described(custom_id, body), "status": "incomplete", "usage": USAGE,
                "incomplete_details": {"reason": "max_output_tokens"}}

    world.stage.spec = Roomier("vision", ModelSettings(), dead_images_unreachable)
    world.batches.answer = cut_off
    world.store.add(lots(2))

    cancelled_after_one_answer(world)

    assert set(world.store.statuses().values()) == {"cancelled"}
    [failed] = world.of(LotFailed)
    assert failed.lot_id == "job-1-lot-0" and failed.stage == "vision"
    assert failed.usage is not None
    assert (failed.usage.input_tokens, failed.usage.output_tokens) == (4000, 12_000)
    assert "cancelled" in failed.reason and "incomplete" in failed.reason, failed.reason
