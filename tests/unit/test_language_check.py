"""The check that a translation is in the language it claims: scripts, copies, names, short texts."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from lotlens_common.model.errors import ModelWrongLanguageError
from lotlens_common.model.language_check import wrong_languages
from lotlens_common.model.scripts import _RANGES, SCRIPT_NAMES, expected_script
from lotlens_common.model.translation import parse_translation_response

ENGLISH = "<p>The front bumper is dented and the left headlight is cracked.</p>"
GOOD = {
    "ru": "<p>Передний бампер помят, левая фара треснула.</p>",
    "uk": "<p>Передній бампер пом'ятий, ліва фара тріснула.</p>",
    "bg": "<p>Предната броня е огъната, левият фар е напукан.</p>",
    "el": "<p>Ο μπροστινός προφυλακτήρας είναι βαθουλωμένος και ο αριστερός προβολέας ραγισμένος.</p>",
    "ar": "<p>المصد الأمامي منبعج والمصباح الأمامي الأيسر متشقق.</p>",
    "fa": "<p>سپر جلو فرورفته است و چراغ جلوی چپ ترک خورده است.</p>",
    "he": "<p>הפגוש הקדמי מעוך והפנס השמאלי סדוק.</p>",
    "zh": "<p>前保险杠凹陷，左前大灯破裂。车辆前部受到明显撞击。</p>",
    "zh-Hant": "<p>前保險槓凹陷，左前大燈破裂。車輛前部受到明顯撞擊。</p>",
    "ja": "<p>フロントバンパーがへこみ、左のヘッドライトにひびが入っています。</p>",
    "ko": "<p>앞 범퍼가 찌그러졌고 왼쪽 헤드라이트에 금이 갔습니다.</p>",
    "th": "<p>กันชนหน้าบุบและไฟหน้าซ้ายแตกร้าว</p>",
    "hi": "<p>आगे का बम्पर पिचका हुआ है और बाईं हेडलाइट में दरार है।</p>",
    "de": "<p>Die vordere Stoßstange ist eingedellt und der linke Scheinwerfer gesprungen.</p>",
}


def test_texts_in_their_own_script_pass() -> None:
    assert wrong_languages(ENGLISH, GOOD) == {}


@pytest.mark.parametrize("language", [code for code in GOOD if code != "de"])
def test_english_where_a_non_latin_script_is_due_is_the_wrong_script(language: str) -> None:
    english_again = "<p>Front bumper dented; left headlight cracked, hood scratched.</p>"
    [problem] = wrong_languages(ENGLISH, {language: english_again}).values()
    assert problem.startswith("0 of ") and SCRIPT_NAMES[expected_script(language) or ""] in problem


def test_russian_in_latin_letters_is_the_wrong_script() -> None:
    assert wrong_languages(ENGLISH, {"ru": "<p>Peredniy bamper pomyat, levaya fara tresnula.</p>"}) == {
        "ru": "0 of 38 letters in Cyrillic script"}


def test_the_english_copied_is_untranslated_in_any_language_but_english() -> None:
    spaced = ENGLISH.replace(" ", "  \n")
    assert wrong_languages(ENGLISH, {"de": ENGLISH, "fr": spaced, "ru": ENGLISH, "en-GB": ENGLISH}) == {
        "de": "the English text, untranslated", "fr": "the English text, untranslated",
        "ru": "the English text, untranslated"}


def test_short_texts_and_names_alone_may_stay_as_they_are() -> None:
    names = "<p>BMW X5, VIN WDB1234567</p>"
    assert wrong_languages(names, {"de": names, "ru": names, "ja": names}) == {}
    short = "<p>Dented door.</p>"
    assert wrong_languages(short, {"fr": short, "ja": short}) == {}


def test_brand_names_and_codes_in_latin_inside_another_script_are_not_counted() -> None:
    russian = ("<p>Mercedes-Benz GLE Coupé, VIN WDB1234567: вмятина на двери, BMW X5 M Sport Package "
               "не пострадал.</p>")
    japanese = "<p>Toyota Camry XV70 Hybrid Premium Edition：フロントバンパーに傷。</p>"
    assert wrong_languages(ENGLISH, {"ru": russian, "ja": japanese}) == {}


def test_a_text_mostly_english_with_a_few_words_of_the_script_is_the_wrong_script() -> None:
    mixed = "<p>The front bumper is dented, the left headlight is cracked and the hood scratched. Бампер.</p>"
    assert list(wrong_languages(ENGLISH, {"ru": mixed})) == ["ru"]


QUOTING_ENGLISH = {
    "zh": "<p>卖家备注：“runs and drives, minor hail damage”。前保险杠凹陷，左前大灯破裂。</p>",
    "ja": "<p>出品者のメモ：「runs and drives, minor hail damage」。フロントバンパーがへこんでいます。</p>",
    "ko": '<p>판매자 메모: "runs and drives, minor hail damage". 앞 범퍼가 찌그러졌습니다.</p>',
    "zh-Hans": "<p>前保险杠（front bumper）凹陷，左前大灯（headlight）破裂，引擎盖（hood）有划痕</p>",
    "hi": "<p>आगे का bumper dented है और बाईं headlight में दरार है।</p>",
}


def test_a_translation_quoting_a_short_english_phrase_is_in_its_script() -> None:
    # A Han character, a kana or a Hangul syllable weighs 2-3 Latin letters; vowel signs count.
    assert wrong_languages(ENGLISH, QUOTING_ENGLISH) == {}


@pytest.mark.parametrize(("language", "few_words"),
                         [("zh", "前保险杠。"), ("ja", "バンパー。"), ("ko", "범퍼."), ("hi", "बम्पर।")])
def test_english_with_a_word_of_a_dense_script_is_the_wrong_script(language: str, few_words: str) -> None:
    mixed = f"<p>The front bumper is dented, the left headlight cracked, the hood scratched. {few_words}</p>"
    assert list(wrong_languages(ENGLISH, {language: mixed})) == [language]


def test_tags_and_entities_are_not_letters() -> None:
    russian = "<p><b>Передний</b> бампер &amp; <i>левая</i> фара: <ul><li>помяты</li></ul></p>"
    assert wrong_languages(ENGLISH, {"ru": russian}) == {}


def test_languages_of_several_scripts_are_checked_only_when_the_tag_names_one() -> None:
    assert expected_script("sr") is None and expected_script("sr-Latn") is None
    assert expected_script("sr-Cyrl") == "Cyrl" and expected_script("ja") == "Jpan"
    assert expected_script("de") is None and expected_script("pt-BR") is None
    latin_serbian = "<p>Prednji branik je ulubljen, a levi far je napukao.</p>"
    assert wrong_languages(ENGLISH, {"sr": latin_serbian, "sr-Latn": latin_serbian}) == {}
    assert list(wrong_languages(ENGLISH, {"sr-Cyrl": latin_serbian})) == ["sr-Cyrl"]


@pytest.mark.parametrize("tag", ["az-IR", "uz-AF", "ky-CN", "tg-PK", "ha-SD", "ms-CC", "lad"])
def test_a_script_implied_by_the_region_alone_is_not_judged(tag: str) -> None:
    # CLDR's likely scripts for these are Arabic (Hebrew for Ladino), their own Latin or Cyrillic.
    assert expected_script(tag) is None
    assert expected_script(f"{tag.split('-')[0]}-Arab") == "Arab"


def test_a_region_implying_another_form_of_the_same_script_is_still_judged() -> None:
    assert expected_script("zh-TW") == "Hant" and expected_script("zh") == "Hans"
    assert expected_script("ru-KZ") == "Cyrl" and expected_script("ar-IL") == "Arab"


def test_a_wrong_language_answer_is_an_unusable_answer_naming_the_languages() -> None:
    text = '{"ru": "' + ENGLISH.replace('"', '\\"') + '", "de": "<p>Delle.</p>"}'
    body = {"status": "completed", "output": [{"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": text}]}]}
    with pytest.raises(ModelWrongLanguageError) as raised:
        parse_translation_response(body, ["en", "ru", "de"], ENGLISH)
    assert raised.value.languages == ("ru",)
    assert str(raised.value) == ("the translation is not in the language asked for "
                                 "(ru: the English text, untranslated)")


# Letters that Scripts.txt puts in a script whose names do not start with the script's name.
_NAMED = {"Hani": ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH", "IDEOGRAPHIC ITERATION"),
          "Hira": ("HIRAGANA", "HENTAIGANA"), "Kana": ("KATAKANA",), "Hang": ("HANGUL",),
          "Thai": ("THAI ",), "Laoo": ("LAO ",), "Mymr": ("MYANMAR",), "Ethi": ("ETHIOPIC",)}
_COMMON_LETTERS = {0x0374}  # GREEK NUMERAL SIGN: Script=Common


@pytest.mark.parametrize("script", sorted(_RANGES))
def test_the_script_table_holds_exactly_the_letters_unicode_names_for_the_script(script: str) -> None:
    words = _NAMED.get(script, (SCRIPT_NAMES[script].upper(),))
    inside = {code for first, last in _RANGES[script] for code in range(first, last + 1)
              if chr(code).isalpha()}
    strangers = [hex(code) for code in inside if not any(w in unicodedata.name(chr(code), "") for w in words)]
    assert strangers == []
    missing = [hex(code) for code in range(sys.maxunicode + 1)
               if code not in inside and code not in _COMMON_LETTERS and chr(code).isalpha()
               and unicodedata.name(chr(code), "").startswith(words)]
    assert missing == []
