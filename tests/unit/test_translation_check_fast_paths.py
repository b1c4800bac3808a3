"""The translator's per-lot checks keep every byte and verdict of the plain way of doing them:
`printable`, `as_paragraph_html`, `script_problem`, `wrong_languages` and
`parse_translation_response` against the code they replaced (kept here as the reference), over
seeded model-like and hostile texts in many scripts, short and as long as a real description."""

from __future__ import annotations

import html
import random
import re
from collections.abc import Callable, Mapping

import orjson
import pytest

from lotlens_common.model import language_check
from lotlens_common.model.errors import ModelOutputError, ModelWrongLanguageError
from lotlens_common.model.han_variants import SYSTEM_NAMES, expected_variant, variant_problem
from lotlens_common.model.html_text import as_paragraph_html, printable, sanitised
from lotlens_common.model.language_check import (
    MAX_SAME_WORDS,
    MIN_LETTERS,
    plain_text,
    script_problem,
    wrong_languages,
)
from lotlens_common.model.scripts import (
    SCRIPT_NAMES,
    count_in_script,
    expected_script,
    heavy_letters,
    mostly_in_script,
    script_letters,
    script_ranges,
)
from lotlens_common.model.translation import parse_translation_response, target_languages

LANGUAGES = ("de", "fr", "ru", "uk", "el", "ar", "fa", "he", "hi", "th", "ko", "ja", "zh", "zh-CN",
             "zh-TW", "zh-Hant", "zh-HK", "en-GB", "sr", "pl")
WORDS = {
    "latin": ["The", "front", "bumper", "is", "dented", "BMW", "X5", "Toyota", "Camry", "WDB1234", "lot"],
    "cyrillic": ["Передний", "бампер", "помят", "левая", "фара", "треснула"],
    "greek": ["μπροστινός", "προφυλακτήρας", "είναι"],
    "arabic": ["المصد", "الأمامي", "منبعج", "سپر", "جلو"],
    "hebrew": ["הפגוש", "הקדמי", "מעוך"],
    "devanagari": ["आगे", "का", "बम्पर", "पिचका"],
    "thai": ["กันชนหน้าบุบ", "ไฟหน้าซ้าย"],
    "hangul": ["앞", "범퍼가", "찌그러졌고"],
    "kana": ["フロントバンパー", "へこみ", "ひびが入っています"],
    "simplified": ["前保险杠凹陷", "左前大灯破裂", "车辆前部", "这个"],
    "traditional": ["前保險槓凹陷", "左前大燈破裂", "車輛前部", "這個"],
}
# Markup a model (or text injected through a lot's notes) may write, and characters every check
# has to treat alike: controls, C1 controls, a lone surrogate, entities, fences, blank lines.
PIECES = ["<p>", "</p>", "<ul>", "</ul>", "<ol>", "</ol>", "<li>", "</li>", "<b>", "</b>", "<em>", "</em>",
          "<br>", "<script>alert(1)</script>", '<a href="javascript:x">', "</a>", "<p class=x>", "<P>",
          "<div>", "&amp;", "&lt;", "&gt;", "&nbsp;", "&#x27;", "&", "<", ">", "\n", "\n\n", " ", "\t",
          "\r", "\xa0", "\x00", "\x07", "\x85", "\x9f", "\ud800", "\u2028", "```html\n", "\n```", "5",
          "2019", ": ", ", ", ". ", "(", ")"]


def _text(chance: random.Random) -> str:
    """A translation-like text: one or more scripts' words, in paragraphs or lists, maybe hostile."""
    scripts = chance.sample(sorted(WORDS), chance.randint(1, 3))
    words = [chance.choice(WORDS[chance.choice(scripts)]) for _ in range(chance.randint(0, 25))]
    text = " ".join(words)
    shape = chance.random()
    if shape < 0.4:
        text = f"<p>{text}</p>"
    elif shape < 0.55:
        text = "<ul>" + "".join(f"<li>{word}</li>" for word in words) + "</ul>"
    elif shape < 0.65:
        text = "\n\n".join(words)
    for _ in range(chance.choice([0, 0, 1, 3])):
        at = chance.randint(0, len(text))
        text = text[:at] + chance.choice(PIECES) + text[at:]
    return text


def _long_text(chance: random.Random) -> str:
    """A text as long as a real description (0.3-2 kB): several of `_text`'s, mostly blocks, now
    and then with a tag holding spaces or an entity, which `wrong_languages` must not cut inside."""
    parts = [_text(chance) for _ in range(chance.randint(3, 12))]
    for _ in range(chance.choice([0, 0, 1, 2])):
        at = chance.randrange(len(parts))
        parts[at] = chance.choice(['<a href="x y z">', "<p title='a b'>", "&amp;", "&nbsp;", "&ampx",
                                   "&#32;", "<", ">", "  ", "\n\n"]) + parts[at]
    return "".join(parts)


def _copy_of(chance: random.Random, english: str) -> str:
    """The English copied as a model leaves a field untranslated, its markup or spacing changed
    now and then (its plain text the same), or its start kept and the rest translated."""
    kind = chance.random()
    if kind < 0.4:
        return english
    if kind < 0.6:
        listed = english.replace("</p><p>", "</p>\n<p>").replace("<p>", "<ul><li>", 1)
        return listed.replace("</p>", "</li></ul>", 1)
    if kind < 0.7:
        return english.replace(" ", "  ").replace("<p>", "<p> ")
    if kind < 0.8:  # a tag with spaces in it (its plain text a space) where the start may be cut
        spaces = [at for at, char in enumerate(english) if char == " " and 40 < at < 90] or [0]
        at = chance.choice(spaces)
        return english[:at] + chance.choice(['<span title="a b c">', "<b  >", "<i x y>"]) + english[at:]
    at = chance.randint(0, len(english))
    return english[:at] + _text(chance)


# The reference: the code as it was before its fast paths.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_ANY_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(?P<body>.*?)\n?```$", re.DOTALL)
_BLANK_LINE = re.compile(r"\n\s*\n")


def _reference_printable(text: str) -> str:
    return _LONE_SURROGATE.sub("\ufffd", _CONTROL.sub("", text))


def _reference_paragraphs(text: str) -> str:
    stripped = _reference_printable(text).strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group("body").strip()
    if _ANY_TAG.search(stripped):
        stripped = sanitised(stripped)
    elif stripped:
        paragraphs = (" ".join(block.split()) for block in _BLANK_LINE.split(stripped))
        stripped = "".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs if p)
    if not stripped:
        raise ModelOutputError("the model returned no text")
    return stripped


_NOT_LETTERS = re.compile(r"[\W\d_]+")
_WORD = re.compile(r"[^\W_]+")


def _reference_script_problem(text: str, script: str) -> str | None:
    pattern = script_letters(script)
    if pattern is None:
        return None
    in_script = len(text) - len(pattern.sub("", text))
    if in_script * 2 > len(text):
        return None
    for heavy, weight in heavy_letters(script):
        in_script += (weight - 1) * (len(text) - len(heavy.sub("", text)))
    if in_script > len(pattern.sub("", _NOT_LETTERS.sub("", text))):
        return None
    among_script = in_script > 0
    others = 0
    for word in _WORD.findall(text):
        foreign = len(pattern.sub("", _NOT_LETTERS.sub("", word)))
        name = (any(char.isdigit() for char in word) or (len(word) > 1 and word.isupper())
                or (among_script and word[:1].isupper()))
        if foreign and not name:
            others += foreign
    counted = in_script + others
    if counted < MIN_LETTERS or in_script * 2 > counted:
        return None
    return f"{in_script} of {counted} letters in {SCRIPT_NAMES[script]} script"


def _reference_variant(language: str, script: str, text: str) -> str | None:
    variant = expected_variant(language) if script in SYSTEM_NAMES else None
    return variant_problem(text, variant) if variant else None


def _reference_wrong_languages(english_html: str, translations: Mapping[str, str]) -> dict[str, str]:
    english = plain_text(english_html)
    problems: dict[str, str] = {}
    for language, markup in translations.items():
        if language.split("-")[0] == "en":
            continue
        script = expected_script(language)
        if script and _reference_script_problem(markup, script) is None:
            problem = _reference_variant(language, script, markup)
        else:
            text = plain_text(markup)
            words = sum(1 for word in re.findall(r"[^\W\d_]{2,}", english) if not word.isupper())
            if text == english and words > MAX_SAME_WORDS:
                problem = "the English text, untranslated"
            else:
                problem = _reference_script_problem(text, script) if script else None
                if script and problem is None:
                    problem = _reference_variant(language, script, text)
        if problem:
            problems[language] = problem
    return problems


def _outcome(function: Callable[..., object], *arguments: object) -> tuple[object, ...]:
    try:
        return "ok", function(*arguments)
    except ModelOutputError as exc:
        return type(exc).__name__, str(exc), getattr(exc, "right", None)


def test_printable_and_paragraph_html_keep_every_byte_of_the_reference() -> None:
    chance = random.Random(20261206)
    for _ in range(20_000):
        text = _text(chance)
        assert printable(text) == _reference_printable(text), repr(text)
        assert _outcome(as_paragraph_html, text) == _outcome(_reference_paragraphs, text), repr(text)


def test_language_verdicts_match_the_reference_over_mixed_scripts() -> None:
    chance = random.Random(6122026)
    for _ in range(5_000):
        english = f"<p>{' '.join(chance.choice(WORDS['latin']) for _ in range(chance.randint(1, 9)))}</p>"
        translations = {}
        for language in chance.sample(LANGUAGES, chance.randint(1, 8)):
            # Now and then the English copied, as a model leaving a field untranslated does.
            translations[language] = english if chance.random() < 0.1 else _text(chance)
        assert wrong_languages(english, translations) == _reference_wrong_languages(english, translations)


def test_long_texts_keep_every_byte_and_verdict_of_the_reference() -> None:
    chance = random.Random(20261207)
    for _ in range(3_000):
        text = _long_text(chance)
        assert _outcome(as_paragraph_html, text) == _outcome(_reference_paragraphs, text), repr(text)
        words = " ".join(chance.choice(WORDS["latin"]) for _ in range(chance.randint(5, 60)))
        english = f"<p>{words}</p>" * chance.randint(1, 4)
        translations = {language: _copy_of(chance, english) if chance.random() < 0.3 else _long_text(chance)
                        for language in chance.sample(LANGUAGES, chance.randint(1, 8))}
        assert wrong_languages(english, translations) == _reference_wrong_languages(english, translations), (
            english, translations)


def test_script_counts_match_the_reference_in_every_script() -> None:
    chance = random.Random(7122026)
    scripts = sorted(SCRIPT_NAMES)
    for _ in range(4_000):
        text = _long_text(chance) if chance.random() < 0.3 else _text(chance)
        script = chance.choice(scripts)
        pattern = script_letters(script)
        assert pattern is not None
        assert count_in_script(text, script) == len(text) - len(pattern.sub("", text)), (script, text)
        assert script_problem(text, script) == _reference_script_problem(text, script), (script, text)
        plain = plain_text(text)
        assert script_problem(plain, script) == _reference_script_problem(plain, script), (script, text)


def _script_text(chance: random.Random, script: str, near: list[int]) -> str:
    """Up to 40 characters: some share of them in the script (its larger ranges likelier), the
    others from `near`, now and then ASCII, a lone surrogate or an emoji."""
    ranges, share = script_ranges(script), chance.random()
    sizes = [min(last - first + 1, 4096) for first, last in ranges]
    characters = []
    for _ in range(chance.randint(1, 40)):
        if chance.random() < 0.2:
            characters.append(chance.choice(" a<>1\ud800\U0001f600"))
        elif chance.random() < share:
            characters.append(chr(chance.randint(*chance.choices(ranges, sizes)[0])))
        else:
            characters.append(chr(chance.choice(near)))
    return "".join(characters)


def test_texts_mostly_in_a_script_by_its_whole_blocks_are_mostly_in_it_by_count() -> None:
    # `mostly_in_script` answers for `count_in_script` when it says yes: characters at and past
    # every range's ends, in the blocks beside them, surrogates and characters past the BMP.
    chance = random.Random(8122026)
    near = sorted({code for script in SCRIPT_NAMES for first, last in script_ranges(script)
                   for code in (first - 1, first, last, last + 1, first & ~0xFF, first | 0xFF,
                                last & ~0xFF, last | 0xFF, chance.randint(first, last))
                   if 0x80 <= code <= 0x10FFFF})
    scripts = sorted(SCRIPT_NAMES) + ["Cyrl", "Hans", "Hang", "Kore"] * 4  # those with whole blocks
    told = 0
    for _ in range(20_000):
        script = chance.choice(scripts)
        text = _script_text(chance, script, near)
        if mostly_in_script(text, script):
            told += 1
            assert count_in_script(text, script) * 2 > len(text), (script, text)
    assert told > 1_000


def _reference_parse(body: Mapping[str, object], languages: list[str], english: str) -> dict[str, str]:
    document = orjson.loads(body["output"][0]["content"][0]["text"])  # type: ignore[index]
    targets = target_languages(languages)
    held = [code for code in targets if isinstance(document.get(code), str) and document[code].strip()]
    lacking = [code for code in targets if code not in held]
    if lacking:
        raise ModelOutputError(f"the translation lacks language {lacking[0]!r}")
    result = {code: _reference_paragraphs(document[code]) for code in held}
    problems = _reference_wrong_languages(english, result)
    if problems:
        raise ModelWrongLanguageError(problems, {code: text for code, text in result.items()
                                                 if code not in problems})
    return result


def test_parsed_translations_and_their_errors_match_the_reference() -> None:
    chance = random.Random(42)
    english = "<p>The front bumper is dented, BMW X5 lot 7.</p>"
    for _ in range(3_000):
        languages = ["en", *chance.sample(LANGUAGES, chance.randint(1, 10))]
        # JSON as UTF-8 holds no lone surrogate (the paragraph test above has them).
        document: dict[str, object] = {code: _text(chance).replace("\ud800", "\ufffd") for code in languages
                                       if chance.random() < 0.95}
        if chance.random() < 0.1 and len(document) > 1:
            document[chance.choice(sorted(document))] = chance.choice([" \n", 5, None])
        body = {"status": "completed", "output": [{"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": orjson.dumps(document).decode()}]}]}
        assert (_outcome(parse_translation_response, body, languages, english)
                == _outcome(_reference_parse, body, languages, english)), document


def test_a_languages_checks_are_worked_out_once_not_per_translation(monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[str] = []

    def counted(tag: str) -> str | None:
        looked_up.append(tag)
        return expected_script(tag)

    monkeypatch.setattr(language_check, "expected_script", counted)
    for _ in range(10):
        wrong_languages("<p>The front bumper is dented.</p>", {"ru": "<p>Передний бампер помят.</p>"})
    assert len(looked_up) <= 1  # once, or not at all when an earlier test asked about `ru`
