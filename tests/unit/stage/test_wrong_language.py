"""A translation answer with some languages wrong (the English copied, another script) keeps the
languages that were right: only the wrong ones are asked again, and every answer is billed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from lotlens_common.events import TranslationCompleted
from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.work import LotWork, TranslationWork
from lotlens_translator.translation_stage import TranslationStage
from tests.unit.stage.conftest import World

ENGLISH = "<p>The front bumper is dented and the left headlight is cracked.</p>"
RIGHT = {"de": "<p>Die Stoßstange ist eingedellt, der Scheinwerfer gesprungen.</p>",
         "ru": "<p>Передний бампер помят, левая фара треснула.</p>",
         "fr": "<p>Le pare-chocs avant est enfoncé, le phare gauche est fissuré.</p>"}
USAGE = {"input_tokens": 1000, "output_tokens": 300}


def test_only_the_languages_answered_wrong_are_asked_again_and_the_right_ones_are_kept(
        world: World) -> None:
    # The whole answer was thrown away: `ru` copied in English had `de` and `fr` asked (and
    # paid for) again, each time within the lot's attempts.
    spec = TranslationStage("translation", ModelSettings(), billed_share=0.5)
    world.stage = Stage(spec, world.store, world.batches, world.publisher, world.settings)
    asked: list[list[str]] = []

    def answer(custom_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        codes = list(body["text"]["format"]["schema"]["required"])
        asked.append(codes)
        # The first answer leaves Russian untranslated; the second gets it right.
        texts = {code: ENGLISH if code == "ru" and len(asked) == 1 else RIGHT[code] for code in codes}
        return {"status": "completed", "usage": USAGE, "output": [{"type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": orjson.dumps(texts).decode()}]}]}

    world.batches.answer = answer
    # The fake store holds any stage's work (typed for the vision stage its other tests drive).
    world.store.add([LotWork("job-1", "job-1-lot-0", "c1", 1, 0, TranslationWork(  # type: ignore[arg-type]
        english_html=ENGLISH, languages=("en", "de", "ru", "fr"), processed_images=2))])

    world.rounds(4)

    assert asked == [["de", "ru", "fr"], ["ru"]]
    [done] = world.of(TranslationCompleted)
    assert done.descriptions == {"en": ENGLISH, **RIGHT}
    # Both answers were billed: the first one's tokens are in the lot's usage.
    assert done.usage is not None and (done.usage.input_tokens, done.usage.output_tokens) == (2000, 600)
