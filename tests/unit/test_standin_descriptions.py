"""The stand-in describes a lot as a real model does, at its length and in its form (a few paragraphs
and a list, 1.1-1.4 kB), the same answer for the same request, and its translations of such a
description pass LotLens' own checks in every script."""

from __future__ import annotations

import hashlib

from lotlens_common.model.html_text import as_paragraph_html
from lotlens_common.model.language_check import wrong_languages
from lotlens_openai_standin.answer_rules import Prompt, translated, vision_text

NOTES = ("2019 Toyota Camry, front collision", "2017 Honda Civic, rear bumper damage",
         "2021 Ford F-150, hail damage on the hood", "2015 BMW 3 Series, flood damage, interior")
LANGUAGES = ("de", "fr", "es", "pl", "ru", "uk", "el", "ar", "fa", "he", "hi", "th", "ko", "ja", "zh",
             "zh-CN", "zh-TW", "zh-Hant", "zh-HK")


def _descriptions(count: int) -> list[str]:
    return [vision_text(Prompt(1 + lot % 6, f"{NOTES[lot % 4]}, lot {lot}", None)) for lot in range(count)]


def test_a_description_is_as_long_as_a_real_models_and_made_of_paragraphs_and_a_list() -> None:
    descriptions = _descriptions(2_000)
    lengths = sorted(len(text) for text in descriptions)
    assert lengths[0] >= 1_100 and lengths[-1] <= 1_400, (lengths[0], lengths[-1])
    for text in descriptions:
        assert text.startswith("<p>Standin vision: ") and text.endswith("</p>")
        assert text.count("<p>") >= 3 and text.count("<ul>") == 1 and text.count("<li>") >= 5
        assert as_paragraph_html(text) == text  # clean HTML, as LotLens stores it
    assert len(set(descriptions)) > 1_900  # lots get descriptions of their own


def test_the_descriptions_are_pinned_across_releases() -> None:
    # The tests build what they expect with the same functions; a change of wording or choice must
    # show here (and in the bench's sizes), not pass unnoticed.
    digest = hashlib.sha256("\n".join(_descriptions(200)).encode()).hexdigest()
    assert digest == "c727b9f641fc2a921dda016904cbdf25a7d0387e9a806c0f87a5b40a1ecdfc6e"


def test_a_lot_photographed_from_fewer_than_four_sides_is_not_said_to_be_seen_from_all_four() -> None:
    for lot, text in enumerate(_descriptions(600)):
        assert ("all four sides" in text) <= (1 + lot % 6 >= 4), text


def test_the_same_request_gets_the_same_description() -> None:
    prompt = Prompt(5, "2019 Toyota Camry, lot 7", None)
    assert vision_text(prompt) == vision_text(Prompt(5, "2019 Toyota Camry, lot 7", None))
    assert vision_text(prompt) != vision_text(Prompt(4, "2019 Toyota Camry, lot 7", None))


def test_translations_of_a_description_keep_its_blocks_and_pass_the_language_checks() -> None:
    for english in _descriptions(200):
        for language in LANGUAGES:
            text = translated(language, english)
            assert text.startswith(f"<p>[{language}] ") and as_paragraph_html(text) == text, language
            assert text.count("<li>") == english.count("<li>")
            assert wrong_languages(english, {language: text}) == {}, (language, text)
        assert wrong_languages(english, {"ru": english}) == {"ru": "the English text, untranslated"}
