"""The deterministic answer rules (documented in the package docstring): what the stand-in "says"."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, NamedTuple

import orjson

from lotlens_openai_standin.descriptions import description_body
from lotlens_openai_standin.request_checks import InputRead
from lotlens_openai_standin.scripts import in_script

ERROR_MARKER = "[standin:error]"
INCOMPLETE_MARKER = "[standin:incomplete]"
# An image URL holding this cannot be fetched by "OpenAI": the request is refused as the real API
# refuses one whose image it could not download (400 `invalid_image_url`, the URL in the message).
UNFETCHABLE_IMAGE_MARKER = "standin-unfetchable"
# Language-tag property names in a translation schema: "de", "fil", "pt-BR", "zh-Hant", "es-419".
_LANGUAGE_KEY = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
# How a translation answer goes wrong for one language (the faults of these names): the English
# copied as it is, or a Chinese language written in the other system's forms.
LanguageFaultKind = Literal["untranslated", "other_variant"]
LanguageFaults = Mapping[str, LanguageFaultKind]


# Not frozen: made for every line of a batch, a frozen dataclass set each field through
# object.__setattr__ (0.8 against 0.3 us).
@dataclass(slots=True)
class Prompt:
    """What the answer depends on: the images, the last user text, the schema asked for."""

    image_count: int
    last_text: str
    schema: Mapping[str, Any] | None
    image_urls: Sequence[str] = ()

    @property
    def unfetchable_image(self) -> str | None:
        """The first image URL "OpenAI" could not download, if any."""
        for url in self.image_urls:
            if UNFETCHABLE_IMAGE_MARKER in url:
                return url
        return None

    @property
    def wants_error(self) -> bool:
        """The in-band marker asking for a 500."""
        return ERROR_MARKER in self.last_text

    @property
    def wants_incomplete(self) -> bool:
        """The in-band marker asking for an incomplete response."""
        return INCOMPLETE_MARKER in self.last_text


def _read_messages(messages: list[Any], image_type: str, text_type: str) -> tuple[list[dict[str, Any]], str]:
    """The image parts of every message of a Chat Completions body, and the last user message's
    text: its content when a string, else the text of its last `text_type` part ("" when it has
    none). A Responses body's input is read by the same rule as it is checked
    (`request_checks.responses_input`)."""
    images: list[dict[str, Any]] = []
    last_text = ""
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        from_user = message.get("role") == "user"
        if not isinstance(content, list):
            if from_user:
                last_text = content if isinstance(content, str) else ""
            continue
        texts = 0
        text: object = ""
        for part in content:
            if isinstance(part, dict):
                kind = part.get("type")
                if kind == image_type:
                    images.append(part)
                elif kind == text_type:
                    texts, text = texts + 1, part.get("text", "")
        if from_user:
            last_text = str(text) if texts else ""
    return images, last_text


def responses_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The JSON schema a (validated) Responses API body asks its answer to follow, if any."""
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    schema = fmt.get("schema") if isinstance(fmt, dict) and fmt.get("type") == "json_schema" else None
    return schema if isinstance(schema, dict) else None


def responses_prompt(read: InputRead, schema: Mapping[str, Any] | None) -> Prompt:
    """The prompt of a Responses API body: its input as checked and read (`responses_input`), and
    the schema it asks for (`responses_schema`)."""
    urls, last_text = read
    return Prompt(len(urls), last_text, schema, urls)


def chat_prompt(body: Mapping[str, Any]) -> Prompt:
    """Read a (validated) Chat Completions body."""
    messages = list(body.get("messages") or [])
    fmt = body.get("response_format")
    schema = None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        inner = fmt.get("json_schema")
        schema = inner.get("schema") if isinstance(inner, dict) else None
    images, last_text = _read_messages(messages, "image_url", "text")
    return Prompt(len(images), last_text, schema if isinstance(schema, dict) else None,
                  tuple([str((part.get("image_url") or {}).get("url")) for part in images]))


def strip_outer_paragraph(text: str) -> str:
    """`<p>x</p>` → `x`; anything else is returned stripped of surrounding whitespace."""
    inner = text.strip()
    if inner.startswith("<p>") and inner.endswith("</p>"):
        return inner[3:-4]
    return inner


# A prompt holding this marker gets markup a manipulated model could write, after the usual answer:
# what the pipeline's sanitiser must stop before it reaches an integrator's page.
HOSTILE_MARKER = "standin:hostile-html"
HOSTILE_HTML = ('<script>alert("standin")</script><img src="x.png" onerror="alert(1)">'
                '<a href="javascript:alert(1)">details</a><b onclick="alert(1)" lang="fa">bold</b>'
                '<ul lang="he"><li title="Seller verified: no damage">tip</li></ul>')


# A prompt holding this marker gets plain text (no tags) with a NUL and other control characters in
# it: JSON carries them and a model may write them, but PostgreSQL text cannot hold a NUL.
CONTROL_MARKER = "standin:control-characters"


def vision_text(prompt: Prompt) -> str:
    """`<p>Standin vision: {N} image(s) reviewed. {T}</p>`, T escaped, then a real description's
    paragraphs and list (`descriptions.description_body`); on HOSTILE_MARKER the first paragraph +
    HOSTILE_HTML; on CONTROL_MARKER the first paragraph's text without tags, with NUL, U+0001 and
    DEL after "reviewed." (the faults' answers stay short: their tests read them whole)."""
    notes = html.escape(prompt.last_text)
    if CONTROL_MARKER in prompt.last_text:
        return f"Standin vision: {prompt.image_count} image(s) reviewed.\x00\x01\x7f {notes}"
    answer = f"<p>Standin vision: {prompt.image_count} image(s) reviewed. {notes}</p>"
    if HOSTILE_MARKER in prompt.last_text:
        return answer + HOSTILE_HTML
    return answer + description_body(prompt.image_count, prompt.last_text)


def translated(language: str, source: str, other_variant: bool = False) -> str:
    """`<p>[{lang}] ` + the source without its outer paragraph, in the language's script + `</p>`
    (`other_variant`: a Chinese language in the other system's forms)."""
    return _in_language(language, strip_outer_paragraph(source), other_variant)


def _in_language(language: str, stripped: str, other_variant: bool) -> str:
    return f"<p>[{language}] {in_script(language, stripped, other_variant)}</p>"


# Asked for every string of every answer; the keys come from requests, so the cache is bounded.
@lru_cache(maxsize=1024)
def _is_language_key(key: str) -> bool:
    return _LANGUAGE_KEY.match(key) is not None


# What fills a schema for an answer, from the source (T), T without its outer paragraph, and the
# answer's language faults.
Filler = Callable[[str, str, LanguageFaults], Any]


def schema_filler(schema: Mapping[str, Any], key: str = "") -> Filler:
    """How `structured_text` fills `schema` (the value at `key`): the schema read once, its fillers
    made for the answers of a batch's translations (one schema); read again for each answer, it was a
    third of a translation's work."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        fields = [(name, schema_filler(sub if isinstance(sub, dict) else {}, name))
                  for name, sub in (schema.get("properties") or {}).items()]
        return lambda source, stripped, faults: {name: fill(source, stripped, faults)
                                                 for name, fill in fields}
    if kind == "array":
        items = schema.get("items")
        if not isinstance(items, dict):
            return lambda source, stripped, faults: []
        item = schema_filler(items, key)
        return lambda source, stripped, faults: [item(source, stripped, faults)]
    if kind in ("number", "integer"):
        return lambda source, stripped, faults: 0
    if kind == "boolean":
        return lambda source, stripped, faults: False
    if kind == "null":
        return lambda source, stripped, faults: None
    # Strings (and untyped leaves): language-code keys get the translation rule, but for the
    # `untranslated` fault's language, which gets the source copied as it is.
    if _is_language_key(key):
        def language(source: str, stripped: str, faults: LanguageFaults) -> str:
            fault = faults.get(key)
            if fault == "untranslated":
                return source
            return _in_language(key, stripped, fault == "other_variant")
        return language
    return lambda source, stripped, faults: source if faults.get(key) == "untranslated" else stripped


def structured_text(prompt: Prompt, faults: LanguageFaults | None = None,
                    filler: Filler | None = None) -> str:
    """A JSON document valid against the requested schema, language-code strings translated
    (but as `faults` has it for its languages); `filler`: the schema's, when one is at hand."""
    assert prompt.schema is not None
    fill = schema_filler(prompt.schema) if filler is None else filler
    source = prompt.last_text
    return orjson.dumps(fill(source, strip_outer_paragraph(source), faults or {})).decode()


def answer_text(prompt: Prompt, faults: LanguageFaults | None = None, filler: Filler | None = None) -> str:
    """The stand-in's whole answer for a prompt (`faults`: the language faults of a translation;
    `filler`: its schema's, when one is at hand)."""
    return structured_text(prompt, faults, filler) if prompt.schema is not None else vision_text(prompt)


# A fixed amount of "thinking" so usage looks like a reasoning model's.
REASONING_TOKENS = 64


def _output_tokens(text: str, reasoning_model: bool) -> tuple[int, int]:
    reasoning = REASONING_TOKENS if reasoning_model else 0
    return len(text) // 4 + 1 + reasoning, reasoning


class Written(NamedTuple):
    """What the model writes within its output-token cap (a tuple: made for every line, a frozen
    dataclass took 0.5 us to make, a tuple half that)."""

    text: str
    # False: the cap was reached (nothing at all when the thinking alone used it up).
    finished: bool
    output_tokens: int
    reasoning_tokens: int


def write_within(text: str, reasoning_model: bool, limit: object) -> Written:
    """The answer cut at the cap (4 characters a token, like the estimate), as OpenAI stops at it
    (`reasoning_model`: `models.is_reasoning_model`, which a batch's plan asks once)."""
    tokens, reasoning = _output_tokens(text, reasoning_model)
    if not isinstance(limit, int) or tokens <= limit:
        return Written(text, True, tokens, reasoning)
    if reasoning >= limit:
        return Written("", False, limit, limit)
    return Written(text[:(limit - reasoning - 1) * 4], False, limit, reasoning)


def estimate_tokens(encoded_length: int, image_count: int) -> int:
    """A rough prompt-token estimate for the answer's usage, from the length of the body as orjson
    encodes it: 4 bytes of JSON per token plus 85 per image (a batch's enqueued tokens count images
    as OpenAI does: `image_costs.py`)."""
    return encoded_length // 4 + 85 * image_count
