"""The translator's per-lot checks keep every byte and verdict of the plain way of doing them:
`printable`, `as_paragraph_html`, `wrong_languages` and `parse_translation_response` against
the code they replaced (kept here as the reference), over seeded model-like and hostile texts in
many scripts."""

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
    plain_text,
    script_problem,
    wrong_languages,
)
from lotlens_common.model.scripts import expected_script
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
        if script and script_problem(markup, script) is None:
            problem = _reference_variant(language, script, markup)
        else:
            text = plain_text(markup)
            words = sum(1 for word in re.findall(r"[^\W\d_]{2,}", english) if not word.isupper())
            if text == english and words > MAX_SAME_WORDS:
                problem = "the English text, untranslated"
            else:
                problem = script_problem(text, script) if script else None
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
