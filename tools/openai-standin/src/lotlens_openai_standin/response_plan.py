"""The `response` objects of one shape of Responses body (`shapes.py`), its fixed fields encoded once.

Every field of a `response` object but seven follows from the body's shape; those seven (the id, the
clock, the status and its details, the cap, the output, the usage) are each answer's own. A plan
holds the object encoded as a template (`json_template.py`) with those as its holes, one for an
answer with a message item and one for an answer without (the thinking used the whole cap), and
writes each answer with one `%`: a batch's lines share a plan, a direct call has one of its own.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import orjson

from lotlens_openai_standin.answer_rules import (
    Filler,
    LanguageFaults,
    Prompt,
    Written,
    answer_text,
    estimate_tokens,
    responses_schema,
    schema_filler,
    write_within,
)
from lotlens_openai_standin.ids import new_id, unix_now
from lotlens_openai_standin.json_template import Slot, encode_template
from lotlens_openai_standin.models import is_reasoning_model
from lotlens_openai_standin.parameter_checks import known_model
from lotlens_openai_standin.shapes import asked_digest

_CUT = orjson.dumps({"reason": "max_output_tokens"})
# The last hex digits of an id written from a template: the answer's number.
_NUMBER_DIGITS = 16


def _id(name: str, prefix: str, digits: int) -> Slot:
    """An id of `digits` hex digits after its prefix, as OpenAI's: random digits drawn with the
    template, then the number of the answer written from it (`_numbers`): unique in the template,
    and the random digits are another template's, or a restart's. Drawn for each id, a batch line's
    five took about 0.5 us."""
    drawn = new_id("", digits - _NUMBER_DIGITS).encode()
    return Slot(name, b'"' + prefix.encode() + drawn + b"%0" + str(_NUMBER_DIGITS).encode() + b'x"')


def _numbers() -> Iterator[int]:
    # From a random start, so that the ids of a direct call's answer (its template's first) do not
    # all end in zeros.
    return itertools.count(random.getrandbits(_NUMBER_DIGITS * 4 - 1))


class Answered(NamedTuple):
    """A model endpoint's 200: the response body encoded (for a line of a batch, the whole line of
    its output file), and what a batch keeps of it (`batch_run.line_answer`)."""

    body: bytes
    tokens: tuple[int, int, int]  # input, output, reasoning
    # A completed response (a chat completion that stopped by itself): not cut at its cap.
    whole: bool
    # The structured output asked for (`shapes.asked_digest`).
    asked: str


def _text_config(body: Mapping[str, Any]) -> dict[str, Any]:
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict):
        return {"format": text["format"], "verbosity": text.get("verbosity", "medium")}
    return {"format": {"type": "text"}, "verbosity": "medium"}


def _output(reasoning: bool, message: bool) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if reasoning:
        items.append({"id": _id("reasoning_id", "rs_", 48), "type": "reasoning", "summary": []})
    if message:
        items.append({
            "id": _id("message_id", "msg_", 48), "type": "message", "role": "assistant",
            "status": Slot("message_status", b'"%b"'),
            "content": [{"type": "output_text", "text": Slot("text", b"%b"), "annotations": [],
                         "logprobs": []}],
        })
    return items


def response_document(body: Mapping[str, Any], model: str, message: bool) -> dict[str, Any]:
    """A `response` object as `POST /v1/responses` returns it (no `output_text`: the SDK derives it),
    each answer's own fields as slots, in the object's order."""
    reasoning_model = is_reasoning_model(model)
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    return {
        "id": _id("id", "resp_", 48), "object": "response", "created_at": Slot("created_at", b"%d"),
        "status": Slot("status", b'"%b"'), "background": False, "error": None,
        "incomplete_details": Slot("incomplete_details", b"%b"),
        "instructions": body.get("instructions"), "max_output_tokens": Slot("max_output_tokens", b"%b"),
        "max_tool_calls": None, "model": model, "output": _output(reasoning_model, message),
        "parallel_tool_calls": True, "previous_response_id": None, "prompt_cache_key": None,
        "reasoning": ({"effort": (reasoning or {}).get("effort", "medium"), "summary": None}
                      if reasoning_model else {"effort": None, "summary": None}),
        "safety_identifier": None, "service_tier": "default", "store": body.get("store", True),
        "temperature": None if reasoning_model else body.get("temperature", 1.0),
        "text": _text_config(body), "tool_choice": "auto", "tools": [], "top_logprobs": 0,
        "top_p": None if reasoning_model else body.get("top_p", 1.0), "truncation": "disabled",
        "usage": {
            "input_tokens": Slot("input_tokens", b"%d"),
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": Slot("output_tokens", b"%d"),
            "output_tokens_details": {"reasoning_tokens": Slot("reasoning_tokens", b"%d")},
            "total_tokens": Slot("total_tokens", b"%d"),
        },
        "user": None, "metadata": body.get("metadata") or {},
    }


def result_line(status_code: object, body: object) -> dict[str, Any]:
    """A line of a batch's output or error file, around a response body (`status_code` its status),
    its id, custom_id and request id as slots."""
    return {"id": _id("line_id", "batch_req_", 32), "custom_id": Slot("custom_id", b"%b"),
            "response": {"status_code": status_code, "request_id": _id("request_id", "req_", 32),
                         "body": body},
            "error": None}


_LINE, _ = encode_template(result_line(Slot("status_code", b"%d"), Slot("body", b"%b")))
_LINE_NUMBERS = _numbers()


def encoded_line(custom_id: str, status: int, body: bytes) -> bytes:
    """The line of a batch's output or error file that answers `custom_id` with `body`, encoded."""
    number = next(_LINE_NUMBERS)
    return _LINE % (number, orjson.dumps(custom_id), status, number, body) + b"\n"


class ResponsesPlan:
    """The answers to the bodies of one shape, a body of which passed every check (`model` its model);
    `lines`: each answer as its whole line of a batch's output file (`result_line`), which a batch
    writes, else the response body alone."""

    def __init__(self, body: Mapping[str, Any], model: str, lines: bool) -> None:
        self.lines = lines
        self.model = model
        self.facts = known_model(model, chat=False)
        self.reasoning = is_reasoning_model(model)
        self.schema = responses_schema(body)
        self.asked = asked_digest(body)
        self._filler: Filler | None = None  # made for the first structured answer
        self._numbers = _numbers()
        # By whether the answer has a message item.
        self._templates: dict[bool, bytes] = {}
        for message in (True, False):
            document = response_document(body, model, message)
            if lines:
                self._templates[message] = encode_template(result_line(200, document))[0] + b"\n"
            else:
                self._templates[message] = encode_template(document)[0]

    def answer(self, body: Mapping[str, Any], prompt: Prompt, faults: LanguageFaults | None,
               custom_id: str = "") -> Answered:
        """The `response` object for a body of the plan's shape, checked: its prompt, the language
        faults of its answer, and (`lines`) the custom_id of its line."""
        if self._filler is None and prompt.schema is not None:
            self._filler = schema_filler(prompt.schema)
        text = answer_text(prompt, faults, self._filler)
        written = write_within(text, self.model, body.get("max_output_tokens"))
        if prompt.wants_incomplete:
            # The model spent its whole budget thinking: no message item at all.
            written = Written("", False, written.reasoning_tokens, written.reasoning_tokens)
        status = b"completed" if written.finished else b"incomplete"
        # The values in the slots' order (`result_line`, `response_document`); each id ends in the
        # answer's number.
        number = next(self._numbers)
        values: list[object] = [number, orjson.dumps(custom_id), number] if self.lines else []
        values += (number, unix_now(), status, b"null" if written.finished else _CUT,
                   orjson.dumps(body.get("max_output_tokens")))
        if self.reasoning:
            values.append(number)
        if written.text:
            values += (number, status, orjson.dumps(written.text))
        input_tokens = estimate_tokens(len(orjson.dumps(body)), prompt.image_count)
        output_tokens, reasoning_tokens = written.output_tokens, written.reasoning_tokens
        values += (input_tokens, output_tokens, reasoning_tokens, input_tokens + output_tokens)
        encoded = self._templates[bool(written.text)] % tuple(values)
        tokens = (input_tokens, output_tokens, reasoning_tokens)
        return Answered(encoded, tokens, written.finished, self.asked)
