"""What reading one answer into its result event does per lot (every lot of a batch, both stages):
nothing summed for an answer that is the lot's only usage, its images counted, not listed."""

from __future__ import annotations

from typing import Any

import pytest

from lotlens_common.events import TranslationCompleted, VisionCompleted
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.usage import Usage
from lotlens_common.stage.work import LotWork, TranslationWork, VisionWork
from lotlens_translator import translation_stage
from lotlens_translator.translation_stage import TranslationStage
from lotlens_vision_batcher import vision_stage
from lotlens_vision_batcher.vision_stage import VisionStage

USAGE = {"input_tokens": 869, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 86,
         "output_tokens_details": {"reasoning_tokens": 64}, "total_tokens": 955}
GERMAN = '{"de": "<p>Die Stoßstange ist verbeult.</p>"}'
EARLIER = Usage(input_tokens=100, output_tokens=10, model="o4-mini", estimated_cost_usd=0.0001)


def _answer(text: str) -> dict[str, Any]:
    message = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
    return {"status": "completed", "usage": USAGE, "output": [message]}


def _refused(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("worked out for an answer that needs none of it")


def _vision(missing: tuple[str, ...] = (), earlier: Usage | None = None) -> LotWork[VisionWork]:
    return LotWork("job-1", "lot-1", "c1", 1, 1, VisionWork(
        image_urls=("https://a/1.jpg", "https://a/2.jpg", "https://a/3.jpg"), languages=("en",),
        missing_images=missing, earlier_usage=earlier))


def _translation(earlier: Usage | None = None) -> LotWork[TranslationWork]:
    return LotWork("job-1", "lot-1", "c1", 1, 1, TranslationWork(
        english_html="<p>The front bumper is dented.</p>", languages=("en", "de"), earlier_usage=earlier))


def test_a_lots_only_answer_is_its_usage_without_a_sum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vision_stage, "summed", _refused)
    monkeypatch.setattr(vision_stage, "_valid_images", _refused)
    monkeypatch.setattr(translation_stage, "summed", _refused)
    vision = VisionStage("vision", ModelSettings(), None)  # type: ignore[arg-type]  # no check here
    described = vision.result_event(_vision(), _answer("<p>Dented.</p>"))
    assert isinstance(described, VisionCompleted) and described.processed_images == 3
    assert described.usage == vision._usage(_answer(""))
    translation = TranslationStage("translation", ModelSettings())
    translated = translation.result_event(_translation(), _answer(GERMAN))
    assert isinstance(translated, TranslationCompleted)
    assert translated.usage == translation._usage(_answer(""))


def test_an_earlier_answers_usage_is_summed_with_the_last_ones() -> None:
    vision = VisionStage("vision", ModelSettings(), None)  # type: ignore[arg-type]
    described = vision.result_event(_vision(("https://a/2.jpg",), EARLIER), _answer("<p>Dented.</p>"))
    assert isinstance(described, VisionCompleted) and described.processed_images == 2
    assert described.usage is not None and described.usage.input_tokens == 969
    translation = TranslationStage("translation", ModelSettings())
    translated = translation.result_event(_translation(EARLIER), _answer(GERMAN))
    assert isinstance(translated, TranslationCompleted)
    assert translated.usage is not None and translated.usage.output_tokens == 96
