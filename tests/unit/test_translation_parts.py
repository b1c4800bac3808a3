"""Languages split over several translation requests when one answer cannot hold them all
(gpt-4.1-mini writes at most 32,768 tokens), and a lot's parts read back as one result."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import orjson
import pytest

from lotlens_common.events import LotFailed, TranslationCompleted
from lotlens_common.model.errors import ModelIncompleteError
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.translation import (
    _fixed,
    _per_language,
    kept_texts,
    language_parts,
    translation_output_budget,
)
from lotlens_common.stage.work import LotWork, PartDone, TranslationWork
from lotlens_translator.translation_stage import TranslationStage

MODELS = ModelSettings()
NINE = ["de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da"]
# About what o4-mini writes in its 4,000 output tokens.
LONG = "<p>" + "x" * 15_000 + "</p>"
CUT = ModelIncompleteError("the response is incomplete (max_output_tokens)", "max_output_tokens")


def test_a_short_text_goes_in_one_request_for_every_language() -> None:
    assert language_parts("<p>Dent.</p>", NINE, MODELS) == [NINE]
    short = LotWork("job", "lot", "c", 1, 1,
                    TranslationWork(english_html="<p>Dent.</p>", languages=tuple(NINE)))
    # Its work row is not rewritten (it reads as before to a release without parts).
    assert sent(TranslationStage("translation", MODELS), short)[0] == short


def test_a_long_text_goes_in_even_parts_each_within_the_models_largest_output() -> None:
    parts = language_parts(LONG, NINE, MODELS)
    assert parts == [NINE[0:3], NINE[3:6], NINE[6:9]]
    assert all(translation_output_budget(LONG, part, MODELS) < MODELS.translation_max_output_tokens
               for part in parts)


@pytest.mark.parametrize("most", [1, 2, 4])
def test_a_part_holds_at_most_the_languages_allowed(most: int) -> None:
    parts = language_parts("<p>Dent.</p>", NINE, MODELS, most)
    assert [code for part in parts for code in part] == NINE and max(map(len, parts)) <= most


def lot(**work: Any) -> LotWork[TranslationWork]:
    return LotWork("job", "lot", "c", 1, 1, TranslationWork(
        english_html=LONG, languages=("en", *NINE), **work))


def answer(codes: list[str], output_tokens: int) -> dict[str, Any]:
    text = orjson.dumps({code: f"<p>[{code}] x</p>" for code in codes}).decode()
    return {"status": "completed", "usage": {"input_tokens": 4000, "output_tokens": output_tokens},
            "output": [{"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": text}]}]}


def sent(spec: TranslationStage, waiting: LotWork[TranslationWork]
         ) -> tuple[LotWork[TranslationWork], list[str]]:
    """The lot as its request was sent (the part kept in its work), and the languages it asks for."""
    [(prepared, body)] = asyncio.run(spec.prepare([waiting])).requests
    return prepared, list(body["text"]["format"]["schema"]["required"])


def asked(spec: TranslationStage, waiting: LotWork[TranslationWork]) -> list[str]:
    return sent(spec, waiting)[1]


def test_each_part_goes_in_turn_and_the_last_completes_with_every_language_and_the_usage_summed() -> None:
    spec = TranslationStage("translation", MODELS, billed_share=0.5)
    waiting = lot()
    for part in (NINE[0:3], NINE[3:6]):
        waiting, languages = sent(spec, waiting)
        assert languages == part and list(waiting.work.sent_part) == part
        with pytest.raises(PartDone) as done:
            spec.result_event(waiting, answer(part, 12_000))
        waiting = done.value.lot
    waiting, languages = sent(spec, waiting)
    # The last part is every language left: nothing kept (the row reads as an unsplit lot's).
    assert languages == NINE[6:9] and waiting.work.sent_part == ()
    event = spec.result_event(waiting, answer(NINE[6:9], 12_000))
    assert isinstance(event, TranslationCompleted)
    assert list(event.descriptions) == ["en", *NINE] and event.descriptions["da"] == "<p>[da] x</p>"
    assert event.usage is not None and event.usage.output_tokens == 36_000
    assert event.usage.input_tokens == 12_000 and event.usage.model == MODELS.translation_model
    # 3 answers at half the list price (batch): 12,000 input and 36,000 output tokens.
    assert event.usage.estimated_cost_usd == pytest.approx(0.5 * (12_000 * 0.40 + 36_000 * 1.60) / 1e6)


def test_a_part_cut_off_at_the_models_largest_output_goes_again_with_half_its_languages() -> None:
    spec = TranslationStage("translation", MODELS)
    roomier = spec.retry_unusable(sent(spec, lot())[0], CUT)  # three languages: first with twice the room
    assert roomier is not None and roomier.work.output_room == 2 and roomier.work.most_per_request is None
    again = spec.retry_unusable(sent(spec, roomier)[0], CUT)  # at the ceiling: one language a request
    assert again is not None and again.work.most_per_request == 1 and again.work.output_room == 1
    assert asked(spec, again) == ["de"]


def at_ceiling(ceiling: int) -> TranslationStage:
    return TranslationStage("translation",
                            MODELS.model_copy(update={"translation_max_output_tokens": ceiling}))


@pytest.mark.parametrize("done", [0, 6], ids=["first-part", "last-part"])
@pytest.mark.parametrize("ceilings", [(32_768, 32_768), (16_000, 32_768), (32_768, 16_000)],
                         ids=["unchanged", "raised", "lowered"])
@pytest.mark.parametrize("release", ["previous", "this"])
def test_a_part_in_flight_is_read_as_it_was_sent_by_either_release_whatever_the_ceiling_now(
        release: str, ceilings: tuple[int, int], done: int) -> None:
    # The previous release kept no `sent_part`: its row of a part in flight read as "every
    # language left", so after an upgrade the answer to three languages of nine was checked
    # against all nine and the lot, paid for, failed ("the translation lacks language 'it'").
    before, after = at_ceiling(ceilings[0]), at_ceiling(ceilings[1])
    waiting = lot(translated={code: f"<p>[{code}] x</p>" for code in NINE[:done]})
    if release == "this":
        waiting, part = sent(before, waiting)
    else:  # the row as the previous release left it, and the part it asked for
        part = before.next_part(waiting.work)
    body = answer(part, 12_000)
    if done + len(part) == len(NINE):
        event = after.result_event(waiting, body)
        assert isinstance(event, TranslationCompleted) and list(event.descriptions) == ["en", *NINE]
        return
    with pytest.raises(PartDone) as partly:
        after.result_event(waiting, body)
    # Every language answered (and billed) is kept; the next request asks for the rest.
    kept = partly.value.lot
    assert list(kept.work.translated) == NINE[:done] + part and kept.work.sent_part == ()
    assert asked(after, kept)[0] == NINE[done + len(part)]


def test_a_previous_release_part_cut_off_goes_again_with_the_room_of_the_part_it_was() -> None:
    spec = TranslationStage("translation", MODELS)
    # Three of nine languages, the row without `sent_part`: twice the room, as for the part sent.
    roomier = spec.retry_unusable(lot(), CUT)
    assert roomier is not None and roomier.work.output_room == 2 and roomier.work.most_per_request is None


def test_a_lot_failing_after_some_parts_keeps_its_english_and_those_parts_in_the_order_asked() -> None:
    work = TranslationWork(english_html="<p>Dent.</p>", languages=("de", "en-Latn", "fr", "ru"),
                           translated={"ru": "<p>[ru] Вмятина.</p>", "de": "<p>[de] Delle.</p>"})
    failed = TranslationStage("t", MODELS).failure_event(LotWork("job", "lot", "c", 1, 3, work), "gave up")
    assert isinstance(failed, LotFailed)
    assert list(failed.descriptions.items()) == [
        ("de", "<p>[de] Delle.</p>"), ("en-Latn", "<p>Dent.</p>"), ("ru", "<p>[ru] Вмятина.</p>")]


def test_a_lot_with_no_english_text_keeps_nothing() -> None:
    assert kept_texts(("en", "de"), None, {}) == {}
    assert kept_texts(("en", "de"), "", {"de": "<p>[de] x</p>"}) == {}


def _former_language_parts(english_html: str, targets: list[str], settings: ModelSettings,
                           most: int | None = None) -> list[list[str]]:
    """`language_parts` before its look for the languages that all fit in one request (the reference)."""
    fit = max(1, (settings.translation_max_output_tokens - _fixed(settings)) // _per_language(english_html))
    size = min(fit, most) if most else fit
    count = max(1, math.ceil(len(targets) / size))
    small, extra = divmod(len(targets), count)
    parts, start = [], 0
    for index in range(count):
        end = start + small + (index < extra)
        parts.append(list(targets[start:end]))
        start = end
    return parts


@pytest.mark.parametrize("seed", range(4))
def test_random_texts_split_their_languages_as_before(seed: int) -> None:
    rng = random.Random(seed)
    split = 0
    for _ in range(2000):
        models = ModelSettings(translation_model=rng.choice(["gpt-4.1-mini", "o4-mini"]),
                               translation_max_output_tokens=rng.choice([1_000, 8_000, 32_768]))
        text = "x" * rng.choice([0, 10, 2_000, 15_000, 60_000])
        targets = NINE[:rng.randint(0, len(NINE))]
        most = rng.choice([None, None, 1, 2, 4])
        parts = language_parts(text, targets, models, most)
        assert parts == _former_language_parts(text, targets, models, most), (len(text), targets, most)
        split += len(parts) > 1
    assert split
