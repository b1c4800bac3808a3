"""The stand-in writes every language LotLens accepts in a script LotLens' check takes for it."""

from __future__ import annotations

import random
import string
import unicodedata
from functools import cache
from importlib.resources import files

import orjson
import pytest

from lotlens_common.model.han_variants import count_forms
from lotlens_common.model.language_check import wrong_languages
from lotlens_common.model.languages import is_supported_language
from lotlens_common.model.scripts import SCRIPT_NAMES
from lotlens_openai_standin.answer_rules import translated
from lotlens_openai_standin.scripts import (
    _LETTER_RUNS,
    _MARKUP,
    _latin_to,
    _written_in,
    alphabet,
    in_script,
    script_of,
)

ENGLISH = ("<p>Standin vision: 3 image(s) reviewed. 2019 Toyota Camry XV70, VIN 4T1B11HK5KU123456: "
           "the front bumper is dented, the left headlight is cracked and the hood is scratched; "
           "the <b>airbags</b> did not deploy &amp; the car runs and drives.</p>")


@cache
def accepted_languages() -> list[str]:
    """Every language subtag LotLens accepts alone (the names list's codes it takes as canonical)."""
    names = orjson.loads(files("lotlens_common.model").joinpath("language_names_en.json").read_bytes())
    return [code for code in names if code.islower() and code.isalpha() and is_supported_language(code)]


def test_every_language_lotlens_accepts_comes_back_in_a_script_its_check_takes() -> None:
    languages = accepted_languages()
    assert len(languages) > 1000  # the whole list, not a few
    answers = {language: translated(language, ENGLISH) for language in languages}
    assert wrong_languages(ENGLISH, answers) == {}


@pytest.mark.parametrize("script", sorted(SCRIPT_NAMES))
def test_a_tag_naming_a_script_lotlens_checks_comes_back_in_it(script: str) -> None:
    tag = f"de-{script}"
    assert is_supported_language(tag) and script_of(tag) is not None
    assert wrong_languages(ENGLISH, {tag: translated(tag, ENGLISH)}) == {}


# The words Unicode names each script's letters with, where they are not the script's own name.
_NAMED = {"Hani": "CJK UNIFIED IDEOGRAPH", "Laoo": "LAO ", "Mymr": "MYANMAR", "Ethi": "ETHIOPIC",
          "Hang": "HANGUL", "Hira": "HIRAGANA", "Kana": "KATAKANA", "Thai": "THAI "}


@pytest.mark.parametrize("script", sorted(_LETTER_RUNS))
def test_each_scripts_alphabet_is_26_of_its_letters(script: str) -> None:
    letters = alphabet(script)
    word = _NAMED.get(script, SCRIPT_NAMES[script].upper())
    assert len(letters) == 26 and all(letter.isalpha() for letter in letters)
    assert [unicodedata.name(letter) for letter in letters if word not in unicodedata.name(letter)] == []


CHINESE_SYSTEMS = {"zh": "Hans", "zh-Hans": "Hans", "zh-CN": "Hans", "zh-SG": "Hans", "yue-CN": "Hans",
                   "zh-MY": "Hans", "zh-Hant": "Hant", "zh-TW": "Hant", "zh-HK": "Hant", "zh-MO": "Hant",
                   "yue": "Hant", "yue-SG": "Hant"}


@pytest.mark.parametrize("tag", sorted(CHINESE_SYSTEMS))
def test_chinese_comes_back_in_the_forms_its_tag_asks_for_and_the_fault_writes_the_others(tag: str) -> None:
    answer, crossed = translated(tag, ENGLISH), translated(tag, ENGLISH, other_variant=True)
    system = CHINESE_SYSTEMS[tag]
    other = "Hant" if system == "Hans" else "Hans"
    assert (count_forms(answer, system), count_forms(answer, other)) == (count_forms(crossed, other), 0)
    assert wrong_languages(ENGLISH, {tag: answer}) == {}
    assert list(wrong_languages(ENGLISH, {tag: crossed})) == [tag]


def test_the_stand_ins_chinese_alphabets_are_one_system_each_by_lotlens_table() -> None:
    # The stand-in's 26 pairs are its own; where LotLens' table knows a character, both agree.
    simplified, traditional = alphabet("Hans"), alphabet("Hant")
    assert count_forms(simplified, "Hant") == 0 and count_forms(traditional, "Hans") == 0
    assert count_forms(simplified, "Hans") >= 20 and count_forms(traditional, "Hant") >= 20


@pytest.mark.parametrize("script", sorted([*_LETTER_RUNS, "Hans", "Hant"]))
def test_an_ascii_text_comes_out_of_each_scripts_charmap_as_out_of_its_translate_table(script: str) -> None:
    # ASCII texts are decoded through the table in C; any other goes through str.translate.
    chance = random.Random(script)
    texts = [ENGLISH, "", "Zz", *("".join(chance.choices(string.printable, k=chance.randrange(90)))
                                  for _ in range(200))]
    for text in [*texts, "Ωmega é " + ENGLISH]:
        assert _written_in(script, text) == text.translate(_latin_to(script))


def _reference_in_script(tag: str, text: str) -> str:
    """`in_script` as it was: each piece between tags and entities written on its own."""
    script = script_of(tag)
    if script is None:
        return text
    pieces = _MARKUP.split(text)
    pieces[::2] = [_written_in(script, piece) for piece in pieces[::2]]
    return "".join(pieces)


@pytest.mark.parametrize("tag", ["ru", "ja", "zh", "zh-TW", "ar", "hy", "ko", "hi", "el", "am", "de"])
def test_a_text_written_whole_keeps_its_tags_as_one_written_piece_by_piece(tag: str) -> None:
    # ASCII texts without entities are written whole and their tags put back; the others piece by piece.
    chance = random.Random(tag)
    pieces = ["<p>", "</p>", "<ul>", "<li>", "</li>", "</ul>", "<b>", "<a href='x y'>", "<", ">", "<<p>",
              "&amp;", "&", "é", " ", "\n", "Camry", "the front bumper", "2019", "BMW X5", "_", "&#39;"]
    for _ in range(3_000):
        text = "".join(chance.choices(pieces, k=chance.randrange(40)))
        assert in_script(tag, text) == _reference_in_script(tag, text), text
    english = translated("en", ENGLISH).replace("&amp;", "and")
    assert in_script(tag, english) == _reference_in_script(tag, english)
