"""Translations of the English HTML: a structured-output request and the parsing of its JSON."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import orjson

from lotlens_common.model.errors import ModelIncompleteError, ModelOutputError, ModelWrongLanguageError
from lotlens_common.model.html_text import as_paragraph_html
from lotlens_common.model.language_check import wrong_languages
from lotlens_common.model.languages import is_english, is_supported_language, language_name
from lotlens_common.model.prompts import translation_instructions
from lotlens_common.model.response_text import response_output_text
from lotlens_common.model.settings import ModelSettings, is_reasoning_model, sampling_options

SCHEMA_NAME = "translations"
# The output budget: per language the text's tokens (about 4 characters each in English) twice
# over, since most languages take more tokens than English, plus the JSON around each; a
# reasoning model also spends its reasoning from the same budget. OpenAI's floor is 16.
_OUTPUT_PER_TEXT_TOKEN = 2
_OUTPUT_PER_LANGUAGE = 100
_OUTPUT_BASE = 500
_REASONING_ALLOWANCE = 4_000
_MIN_OUTPUT_TOKENS = 16


def _per_language(english_html: str) -> int:
    return _OUTPUT_PER_LANGUAGE + _OUTPUT_PER_TEXT_TOKEN * (len(english_html) // 4 + 1)


def _fixed(settings: ModelSettings) -> int:
    reasoning = is_reasoning_model(settings.translation_model)
    return _OUTPUT_BASE + (_REASONING_ALLOWANCE if reasoning else 0)


def translation_output_budget(english_html: str, targets: Sequence[str], settings: ModelSettings,
                              room: int = 1) -> int:
    """`max_output_tokens` for translating this text into these languages, `room` times over."""
    need = _fixed(settings) + len(targets) * _per_language(english_html)
    return max(_MIN_OUTPUT_TOKENS, min(settings.translation_max_output_tokens, need * room))


def language_parts(english_html: str, targets: Sequence[str], settings: ModelSettings,
                   most: int | None = None) -> list[list[str]]:
    """The languages in as few requests as let each one's estimated output fit the model's
    largest (`translation_max_output_tokens`), and none hold more than `most` languages; in
    order, the parts as even as can be.

    One request for every language asked more than the model may write of a long text (15,000
    characters into 9 languages is about 34,000 tokens; gpt-4.1-mini writes 32,768 at most), so
    the answer was cut off at the ceiling, however often it was asked again.
    """
    fit = max(1, (settings.translation_max_output_tokens - _fixed(settings)) // _per_language(english_html))
    size = min(fit, most) if most else fit
    if len(targets) <= size:  # nearly every lot: one request for all its languages (0.4 us, not 1.0)
        return [list(targets)]
    count = math.ceil(len(targets) / size)
    small, extra = divmod(len(targets), count)
    parts, start = [], 0
    for index in range(count):
        end = start + small + (index < extra)
        parts.append(list(targets[start:end]))
        start = end
    return parts


def halved_part(english_html: str, targets: Sequence[str], settings: ModelSettings, room: int,
                error: ModelOutputError) -> int | None:
    """The most languages a request may hold after one for `targets` was cut off by its output
    budget at the model's largest (the estimate was short): half as many. None when it was not
    cut off there, or asked for one language only (nothing is left to split)."""
    if not isinstance(error, ModelIncompleteError) or error.reason != "max_output_tokens":
        return None
    at_ceiling = translation_output_budget(english_html, targets, settings, room) >= (
        settings.translation_max_output_tokens)
    return len(targets) // 2 if at_ceiling and len(targets) > 1 else None


def retry_room(english_html: str, targets: Sequence[str], settings: ModelSettings, room: int,
               error: ModelOutputError) -> int | None:
    """The room to ask again with after an unusable translation: twice as much when it was cut
    off by its output budget and the budget is still under the ceiling; the same when a language
    came back untranslated or in another script (a model's next answer often is right; the
    caller asks for those languages only, `ModelWrongLanguageError.right` kept); None when asking
    again would end the same. The caller bounds how often it asks."""
    if isinstance(error, ModelWrongLanguageError):
        return room
    if not isinstance(error, ModelIncompleteError) or error.reason != "max_output_tokens":
        return None
    ceiling = settings.translation_max_output_tokens
    return None if translation_output_budget(english_html, targets, settings, room) >= ceiling else room * 2


def target_languages(languages: Sequence[str]) -> list[str]:
    """The languages to translate into: deduplicated, in order, English (`en`, `en-Latn`) left out."""
    return list(_targets(tuple(languages)))


# A job's lots share their languages, and a lot's were worked out six times on its way through the
# translator (16 tag checks, 24 us of its ~100): once per set of languages instead. An unsupported
# code raises each time (lru_cache keeps no exception).
@lru_cache(maxsize=1024)
def _targets(languages: tuple[str, ...]) -> tuple[str, ...]:
    targets: list[str] = []
    for code in languages:
        if not is_supported_language(code):
            raise ValueError(f"unsupported language code: {code!r}")
        if not is_english(code) and code not in targets:
            targets.append(code)
    return tuple(targets)


def kept_texts(languages: Sequence[str], english_html: str | None, translated: Mapping[str, str]
               ) -> dict[str, str]:
    """The requested languages a lot has a text in, in the client's order: English (`en`, `en-Latn`)
    when there is an English text, and those translated. A lot failing at translation keeps these:
    they were paid for, and used to be dropped with it."""
    if not english_html:
        return {}
    return {code: english_html if is_english(code) else translated[code]
            for code in languages if is_english(code) or code in translated}


def translations_schema(targets: Sequence[str]) -> dict[str, Any]:
    """A strict JSON schema: one required string property per target language code.

    Built anew for each body, not kept per set of languages: one shared by every body asking for
    the same languages was changed for all of them by whoever changed one (a test making a wrong
    request from a right one did, and the right requests after it were refused)."""
    return {
        "type": "object",
        "properties": {
            code: {"type": "string", "description": f"The HTML translated into {language_name(code)}."}
            for code in targets
        },
        "required": list(targets),
        "additionalProperties": False,
    }


# The instructions name each language in words: 11 us a lot, built once per set of languages.
_instructions = lru_cache(maxsize=1024)(translation_instructions)


def translation_request_body(english_html: str, languages: Sequence[str], settings: ModelSettings,
                             room: int = 1) -> dict[str, Any]:
    """A `/v1/responses` body asking for every non-English language at once, as strict JSON."""
    targets = target_languages(languages)
    if not targets:
        raise ValueError("no target language other than English")
    return {
        "model": settings.translation_model,
        "instructions": _instructions(tuple(targets)),
        # The English HTML is the last (only) user text: the text to translate.
        "input": [{"role": "user", "content": [{"type": "input_text", "text": english_html}]}],
        "text": {"format": {"type": "json_schema", "name": SCHEMA_NAME, "strict": True,
                            "schema": translations_schema(targets)}},
        "max_output_tokens": translation_output_budget(english_html, targets, settings, room),
        "store": False,  # as the vision request: OpenAI keeps nothing of the lot's texts
        **sampling_options(settings.translation_model, settings),
    }


def parse_translation_response(body: Mapping[str, Any], languages: Sequence[str], english_html: str,
                               *, some_of: bool = False) -> dict[str, str]:
    """language code → HTML for every requested non-English language, each in its language
    (`language_check`); ModelOutputError otherwise (ModelWrongLanguageError naming the languages
    and holding the texts that were right).
    `some_of`: the request asked for an unknown part of `languages`, so those the answer
    holds are read, at least one."""
    text = response_output_text(body)
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ModelOutputError(f"the translation is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ModelOutputError("the translation is not a JSON object")
    targets = target_languages(languages)
    held: dict[str, str] = {}
    lacking: list[str] = []
    for code in targets:  # one look at each language's field, not four
        field = document.get(code)
        if isinstance(field, str) and field.strip():
            held[code] = field
        else:
            lacking.append(code)
    if lacking and not (some_of and held):
        raise ModelOutputError(f"the translation lacks language {lacking[0]!r}")
    result = {code: as_paragraph_html(field) for code, field in held.items()}
    problems = wrong_languages(english_html, result)
    if problems:
        raise ModelWrongLanguageError(problems, {code: text for code, text in result.items()
                                                 if code not in problems})
    return result
