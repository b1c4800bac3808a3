"""Translation answers the stand-in cannot give, through a real gateway (synchronous lot) and a
model that answers what each test scripts (`canned_model.py`): good texts quoting English, and
translations cut off by their output budget."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from tests.integration.canned_model import CUT_OFF, CannedModel, canned_model
from tests.integration.gateway_support import running_gateway
from tests.servers import image_host

pytestmark = pytest.mark.integration

ENGLISH = "<p>The front bumper is dented and the left headlight is cracked.</p>"


@pytest.fixture()
def images() -> Iterator[str]:
    with image_host() as url:
        yield url


def describe(settings: ServiceSettings, engine: Engine, model: CannedModel, images: str,
             languages: list[str]) -> dict[str, Any]:
    with running_gateway(settings, engine, model_url=model.url) as gateway:
        lots = [{"lot_id": "answers-1", "additional_info": "2019 Toyota Camry",
                 "images": [{"url": f"{images}/front.png"}]}]
        response = gateway.submit(lots, languages=languages)
    assert response.status_code == 200, response.text
    lot: dict[str, Any] = response.json()["lots"][0]
    return lot


# Good translations that quote the seller's note or name parts in English, as models do.
QUOTING_ENGLISH = {
    "zh": "<p>卖家备注：“runs and drives, minor hail damage”。前保险杠凹陷，左前大灯破裂。</p>",
    "ja": "<p>出品者のメモ：「runs and drives, minor hail damage」。フロントバンパーがへこんでいます。</p>",
    "ko": '<p>판매자 메모: "runs and drives, minor hail damage". 앞 범퍼가 찌그러졌습니다.</p>',
    "zh-Hans": "<p>前保险杠（front bumper）凹陷，左前大灯（headlight）破裂，引擎盖（hood）有划痕</p>",
    "hi": "<p>आगे का bumper dented है और बाईं headlight में दरार है।</p>",
}


@pytest.mark.parametrize("language", list(QUOTING_ENGLISH))
def test_a_good_translation_quoting_a_short_english_phrase_completes(
        settings: ServiceSettings, engine: Engine, images: str, language: str) -> None:
    # A Han character or a Hangul syllable was one letter like a Latin one, and Indic vowel signs
    # were no letters at all: these read as mostly English ("16 of 44 letters in Han").
    with canned_model(ENGLISH, [{language: QUOTING_ENGLISH[language]}]) as model:
        lot = describe(settings, engine, model, images, ["en", language])
    assert lot["status"] == "completed", lot.get("error_message")
    assert lot["descriptions"][1] == {"language": language, "damages": QUOTING_ENGLISH[language]}
    assert len(model.budgets) == 1


def test_only_the_languages_answered_wrong_are_asked_again_and_the_right_ones_are_kept(
        settings: ServiceSettings, engine: Engine, images: str) -> None:
    # The whole answer was thrown away: `ru` copied in English had `de` and `fr` asked (and paid
    # for) again, and an answer holding `ru` alone then failed the lot ("lacks language 'de'").
    right = {"de": "<p>Die Stoßstange ist eingedellt, der Scheinwerfer gesprungen.</p>",
             "ru": "<p>Передний бампер помят, левая фара треснула.</p>",
             "fr": "<p>Le pare-chocs avant est enfoncé, le phare gauche est fissuré.</p>"}
    with canned_model(ENGLISH, [{**right, "ru": ENGLISH}, {"ru": right["ru"]}]) as model:
        lot = describe(settings, engine, model, images, ["en", "de", "ru", "fr"])
    assert model.asked == [["de", "ru", "fr"], ["ru"]]
    assert lot["status"] == "completed", lot.get("error_message")
    assert lot["descriptions"][1:] == [{"language": code, "damages": text} for code, text in right.items()]


# About 1.1 KB of English into nine languages: a first budget of 6,476 output tokens.
SENTENCE = "The front bumper is dented and the left headlight is cracked."
LONG_ENGLISH = "<p>" + " ".join([SENTENCE] * 18) + " Ok.</p>"
NINE = ["de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da"]
TRANSLATED: Mapping[str, str] = {code: f"<p>[{code}] Stoßstange vorne eingedellt.</p>" for code in NINE}


def test_a_translation_cut_off_is_asked_again_with_twice_the_room_up_to_the_ceiling(
        settings: ServiceSettings, engine: Engine, images: str) -> None:
    # The tries for wrong languages (3) also capped these: the lot failed at 25,904 tokens.
    with canned_model(LONG_ENGLISH, [CUT_OFF, CUT_OFF, CUT_OFF, TRANSLATED]) as model:
        lot = describe(settings, engine, model, images, ["en", *NINE])
    assert model.budgets == [6476, 12952, 25904, 32768]
    assert lot["status"] == "completed", lot.get("error_message")
    assert [d["language"] for d in lot["descriptions"]] == ["en", *NINE]


def test_a_translation_cut_off_at_the_ceiling_is_asked_again_in_parts_and_completes(
        settings: ServiceSettings, engine: Engine, images: str) -> None:
    # The estimate was short: it failed the lot with "the response is incomplete".
    with canned_model(LONG_ENGLISH, [CUT_OFF, CUT_OFF, CUT_OFF, CUT_OFF, TRANSLATED]) as model:
        lot = describe(settings, engine, model, images, ["en", *NINE])
    assert lot["status"] == "completed", lot.get("error_message")
    assert [d["language"] for d in lot["descriptions"]] == ["en", *NINE]
    # Then three parts of three languages (at most half of nine each), each with its own budget.
    assert model.budgets[:4] == [6476, 12952, 25904, 32768]
    assert model.budgets[4:] == [2492] * 3


def test_a_translation_still_cut_off_at_the_ceiling_in_single_languages_fails_the_lot(
        settings: ServiceSettings, engine: Engine, images: str) -> None:
    with canned_model(LONG_ENGLISH, [CUT_OFF]) as model:
        lot = describe(settings, engine, model, images, ["en", *NINE])
    assert model.budgets[:4] == [6476, 12952, 25904, 32768]
    # Nine languages, three parts of three, nine of one: each cut off at the ceiling.
    assert model.budgets.count(32768) == 1 + 3 + 9
    assert lot["status"] == "failed"
    assert lot["error_message"] == ("the model could not describe the lot: the response is incomplete "
                                    "(max_output_tokens)")
