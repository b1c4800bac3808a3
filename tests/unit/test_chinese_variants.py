"""A Chinese translation must be in the forms its tag asks for: Traditional for `zh-Hant`, `zh-TW`,
`zh-HK`, `zh-MO`; Simplified for `zh`, `zh-Hans`, `zh-CN`, `zh-SG`. Both are Han to the script
check, so a `zh-TW` text in Simplified characters was stored as Traditional Chinese."""

from __future__ import annotations

import unicodedata

import pytest

from lotlens_common.model.errors import ModelWrongLanguageError
from lotlens_common.model.han_variants import _PAIRS, _SHARED_SIMPLIFIED, MIN_VARIANT_MARKS, count_forms
from lotlens_common.model.language_check import wrong_languages
from lotlens_common.model.translation import parse_translation_response

ENGLISH = ("<p>2019 Toyota Camry: the front bumper is dented and scratched on the left, the left "
           "headlight lens is cracked and the hood is slightly bent.</p>")
# The same car-damage report in each system, written as a Chinese adjuster would write it.
SIMPLIFIED = ("<p>2019款丰田凯美瑞（VIN 4T1B11HK5KU123456），行驶里程约68,000公里。前保险杠左侧有明显凹陷"
              "和划痕，左前大灯灯罩破裂，发动机盖轻微变形。</p>"
              "<p>车身右侧两个车门有多处擦伤，后视镜外壳脱落，挡风玻璃出现一条约15厘米的裂纹。</p>")
TRADITIONAL = ("<p>2019款豐田凱美瑞（VIN 4T1B11HK5KU123456），行駛里程約68,000公里。前保險槓左側有明顯凹陷"
               "和刮痕，左前大燈燈罩破裂，發動機蓋輕微變形。</p>"
               "<p>車身右側兩個車門有多處擦傷，後視鏡外殼脫落，擋風玻璃出現一條約15公分的裂紋。</p>")
# Hong Kong prints some characters otherwise than Taiwan (説, 綫, 啓, 銹): still Traditional.
HONG_KONG = "<p>據車主説，該車曾在暴雨中浸水，車底有銹蝕，啓動時引擎有異響，電綫需要檢查。</p>"
# Latin names, codes and digits among the Han characters.
SIMPLIFIED_WITH_NAMES = ("<p>BMW X5 xDrive40i（2021，VIN WBA12345678901234）：左后门和后翼子板有约30×20厘米"
                         "的凹陷，漆面开裂；Michelin Pilot Sport 4 轮胎侧壁鼓包。安全气囊未弹出，仪表盘"
                         "显示发动机故障灯亮起。</p>")
TRADITIONAL_WITH_NAMES = ("<p>BMW X5 xDrive40i（2021，VIN WBA12345678901234）：左後門和後翼子板有約30×20公分"
                          "的凹陷，漆面開裂；Michelin Pilot Sport 4 輪胎側壁鼓包。安全氣囊未彈出，儀表板"
                          "顯示發動機故障燈亮起。</p>")

TRADITIONAL_TAGS = ["zh-Hant", "zh-TW", "zh-HK", "zh-MO", "yue"]
SIMPLIFIED_TAGS = ["zh", "zh-Hans", "zh-CN", "zh-SG", "yue-CN"]


@pytest.mark.parametrize("language", TRADITIONAL_TAGS)
def test_simplified_characters_where_traditional_chinese_is_asked_for_are_the_wrong_forms(
        language: str) -> None:
    assert wrong_languages(ENGLISH, {language: SIMPLIFIED}) == {
        language: "Simplified characters, Traditional asked for (30 of 30 that differ)"}


@pytest.mark.parametrize("language", SIMPLIFIED_TAGS)
def test_traditional_characters_where_simplified_chinese_is_asked_for_are_the_wrong_forms(
        language: str) -> None:
    assert wrong_languages(ENGLISH, {language: TRADITIONAL}) == {
        language: "Traditional characters, Simplified asked for (34 of 34 that differ)"}


def test_each_system_passes_where_it_is_asked_for_and_fails_where_the_other_is() -> None:
    answers = {"zh-TW": TRADITIONAL, "zh-HK": HONG_KONG, "zh": SIMPLIFIED, "zh-CN": HONG_KONG,
               "zh-SG": TRADITIONAL, "zh-MO": SIMPLIFIED}
    assert sorted(wrong_languages(ENGLISH, answers)) == ["zh-CN", "zh-MO", "zh-SG"]


def test_a_translation_in_the_other_system_is_an_answer_asked_again() -> None:
    body = {"output": [{"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": f'{{"zh-TW": "{SIMPLIFIED}", "de": "Stoßstange verbeult"}}'}]}]}
    with pytest.raises(ModelWrongLanguageError) as raised:
        parse_translation_response(body, ["en", "zh-TW", "de"], ENGLISH)
    assert raised.value.languages == ("zh-TW",)
    assert str(raised.value) == ("the translation is not in the language asked for (zh-TW: Simplified "
                                 "characters, Traditional asked for (30 of 30 that differ))")


def test_latin_names_codes_and_digits_do_not_count_either_way() -> None:
    answers = {"zh-TW": SIMPLIFIED_WITH_NAMES, "zh-Hant": TRADITIONAL_WITH_NAMES,
               "zh": SIMPLIFIED_WITH_NAMES, "zh-Hans": TRADITIONAL_WITH_NAMES}
    assert wrong_languages(ENGLISH, answers) == {
        "zh-TW": "Simplified characters, Traditional asked for (14 of 14 that differ)",
        "zh-Hans": "Traditional characters, Simplified asked for (15 of 15 that differ)"}


def test_a_name_quoted_in_the_other_system_does_not_outvote_the_text() -> None:
    # 东风日产 (Dongfeng Nissan) as the seller wrote it, inside a Traditional report.
    quoted = "<p>賣家原文：「东风日产轩逸」。" + TRADITIONAL.removeprefix("<p>")
    assert count_forms(quoted, "Hans") == 3
    assert list(wrong_languages(ENGLISH, {"zh-TW": quoted, "zh": quoted})) == ["zh"]


def test_a_short_text_is_not_judged_until_enough_characters_differ() -> None:
    short = "<p>左前门凹陷，前保险杠有明显划痕。</p>"  # 门 险 显: three differing characters
    assert count_forms(short, "Hans") == 3 < MIN_VARIANT_MARKS
    longer = short + "<p>左前大灯灯罩破裂，发动机盖轻微变形。</p>"
    assert count_forms(longer, "Hans") >= MIN_VARIANT_MARKS
    assert wrong_languages(ENGLISH, {"zh-TW": short, "zh-HK": longer}) == {
        "zh-HK": "Simplified characters, Traditional asked for (11 of 11 that differ)"}


def test_regions_where_both_systems_are_in_use_are_not_judged_by_either() -> None:
    # CLDR's likely script for zh-US and zh-AU is Traditional, for nan-TW Simplified: Chinese
    # there is written both ways, as Taiwanese Hokkien is in Traditional characters. Canada's,
    # Latin America's and Europe's Chinese too (a review found them held to Simplified).
    answers = {"zh-US": SIMPLIFIED, "zh-AU": SIMPLIFIED, "nan-TW": TRADITIONAL, "zh-MY": TRADITIONAL,
               "zh-CA": TRADITIONAL, "zh-419": TRADITIONAL, "zh-FR": TRADITIONAL, "zh-JP": TRADITIONAL}
    assert list(wrong_languages(ENGLISH, answers)) == ["zh-MY"]


def test_cantonese_in_singapore_is_traditional_as_its_script_check_and_cldr_say() -> None:
    # The region table held yue-SG to Simplified (zh-SG's standard) while CLDR, the script check
    # and the stand-in say Traditional: every right answer was asked again, then failed.
    assert wrong_languages(ENGLISH, {"yue-SG": TRADITIONAL}) == {}
    assert list(wrong_languages(ENGLISH, {"yue-SG": SIMPLIFIED})) == ["yue-SG"]


def test_japanese_or_korean_named_in_han_is_not_held_to_a_chinese_system() -> None:
    # 国 and 会 are Japanese forms as much as Simplified Chinese ones.
    japanese = "<p>" + "国会の会議の後、体育会の医学部の学生が区の旧車を見た。" * 2 + "</p>"
    assert wrong_languages(ENGLISH, {"ja-Hant": japanese, "ko-Hant": TRADITIONAL}) == {}


def test_a_list_whose_tags_outweigh_its_han_labels_is_judged_on_its_text() -> None:
    # Bold labels in a list: the markup's Latin tag letters failed the script check on the markup,
    # the text passed it as Han, and its forms were never counted: Simplified stored as zh-TW.
    items = ["前保险杠", "发动机盖", "左前大灯", "后视镜", "车门", "挡风玻璃"]
    markup = "<ul>" + "".join(f"<li><strong>{item}</strong>：凹陷</li>" for item in items) + "</ul>"
    assert list(wrong_languages(ENGLISH, {"zh-TW": markup})) == ["zh-TW"]
    to_traditional = str.maketrans("险杠发动机盖灯后视镜车门挡风", "險槓發動機蓋燈後視鏡車門擋風")
    traditional = markup.translate(to_traditional)
    assert wrong_languages(ENGLISH, {"zh-TW": traditional}) == {}


def test_the_table_holds_only_han_characters_each_in_one_system() -> None:
    simplified = [word[0] for word in _PAIRS.split()]
    traditional = [form for word in (_PAIRS + " " + _SHARED_SIMPLIFIED).split() for form in word[1:]]
    assert len(simplified) >= 250 and all(len(word) >= 2 for word in _PAIRS.split())
    every = simplified + traditional + [word[0] for word in _SHARED_SIMPLIFIED.split()]
    assert len(every) == len(set(every))  # no character in two places
    assert [c for c in every if not unicodedata.name(c).startswith("CJK UNIFIED IDEOGRAPH")] == []
