"""The `response` objects of one shape of Responses body (`shapes.py`), its fixed fields encoded once.

Every field of a `response` object but seven follows from the body's shape; those seven (the id, the
clock, the status and its details, the cap, the output, the usage) are each answer's own. A plan
holds the object encoded as a template (`json_template.py`) with those as its holes, one for an
answer with a message item and one for an answer without (the thinking used the whole cap), and
writes each answer with one `%`: a batch's lines share a plan, a direct call has one of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from lotlens_openai_standin.ids import hex_runs, unix_now
from lotlens_openai_standin.json_template import Slot, encode_template
from lotlens_openai_standin.models import is_reasoning_model
from lotlens_openai_standin.parameter_checks import known_model
from lotlens_openai_standin.shapes import asked_digest

_CUT = orjson.dumps({"reason": "max_output_tokens"})
# What a body's input and cap add to its encoding besides their values: `,"input":`, `,"max_output_tokens":`.
_INPUT_KEY, _CAP_KEY = len(b',"input":'), len(b',"max_output_tokens":')


def _id(name: str, prefix: str, shared: bool = False) -> Slot:
    """An id written from a template: its prefix, 32 hex digits of its own and (`shared`: a response's
    and its items') the response's last 16 digits, all drawn for each answer (`ids.hex_runs`).

    A response's items end as it does in each of the OpenAI description's examples of a response and
    its message (resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b,
    msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b); nothing else is shared, as OpenAI's line
    and request ids are drawn apart from the response's, and one answer's from another's."""
    return Slot(name, b'"' + prefix.encode() + (b"%b%b" if shared else b"%b") + b'"')


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
        items.append({"id": _id("reasoning_id", "rs_", shared=True), "type": "reasoning", "summary": []})
    if message:
        items.append({
            "id": _id("message_id", "msg_", shared=True), "type": "message", "role": "assistant",
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
        "id": _id("id", "resp_", shared=True), "object": "response", "created_at": Slot("created_at", b"%d"),
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
    its id, custom_id and request id as slots (OpenAI's batch files give the request id without the
    `req_` of its `x-request-id` header)."""
    return {"id": _id("line_id", "batch_req_"), "custom_id": Slot("custom_id", b"%b"),
            "response": {"status_code": status_code, "request_id": _id("request_id", ""), "body": body},
            "error": None}


_LINE = encode_template(result_line(Slot("status_code", b"%d"), Slot("body", b"%b")))


def encoded_line(custom_id: str, status: int, body: bytes) -> bytes:
    """The line of a batch's output or error file that answers `custom_id` with `body`, encoded."""
    line_id, request_id, _ = hex_runs(2)
    return _LINE % (line_id, orjson.dumps(custom_id), status, request_id, body) + b"\n"


class ResponsesPlan:
    """The answers to the bodies of one shape, a body of which passed every check (`model` its model);
    `lines`: each answer as its whole line of a batch's output file (`result_line`), which a batch
    writes, else the response body alone; `shape`: the bodies' shape (`shapes.shape_of`), if known."""

    def __init__(self, body: Mapping[str, Any], model: str, lines: bool, shape: bytes = b"") -> None:
        self.lines = lines
        self.model = model
        self.facts = known_model(model, chat=False)
        self.reasoning = is_reasoning_model(model)
        self.schema = responses_schema(body)
        self.asked = asked_digest(body)
        self._filler: Filler | None = None  # made for the first structured answer
        # An answer's input tokens are counted from its body's length as orjson encodes it. Given the
        # shape (`shapes.shape_of`: the body but its input and cap, the same for every body of the
        # plan), that length is the shape's, the input's and the cap's, each with its key and comma
        # (a body's model is in its shape, so a comma comes before the input): encoding the body
        # whole again took a vision line 10k instructions and a translation line 9k, their input
        # alone 6.5k and 3k.
        self._shape_length = len(shape) + _INPUT_KEY if shape else None
        # By whether the answer has a message item.
        self._templates: dict[bool, bytes] = {}
        for message in (True, False):
            document = response_document(body, model, message)
            if lines:
                self._templates[message] = encode_template(result_line(200, document)) + b"\n"
            else:
                self._templates[message] = encode_template(document)

    def answer(self, body: Mapping[str, Any], prompt: Prompt, faults: LanguageFaults | None,
               custom_id: str = "") -> Answered:
        """The `response` object for a body of the plan's shape, checked: its prompt, the language
        faults of its answer, and (`lines`) the custom_id of its line."""
        if self._filler is None and prompt.schema is not None:
            self._filler = schema_filler(prompt.schema)
        text = answer_text(prompt, faults, self._filler)
        written = write_within(text, self.reasoning, body.get("max_output_tokens"))
        if prompt.wants_incomplete:
            # The model spent its whole budget thinking: no message item at all.
            written = Written("", False, written.reasoning_tokens, written.reasoning_tokens)
        status = b"completed" if written.finished else b"incomplete"
        # The values in the slots' order (`result_line`, `response_document`).
        line_id, request_id, response_id, reasoning_id, message_id, shared = hex_runs(5)
        cap = orjson.dumps(body.get("max_output_tokens"))
        values: list[object] = [line_id, orjson.dumps(custom_id), request_id] if self.lines else []
        values += (response_id, shared, unix_now(), status, b"null" if written.finished else _CUT, cap)
        if self.reasoning:
            values += (reasoning_id, shared)
        if written.text:
            values += (message_id, shared, status, orjson.dumps(written.text))
        if self._shape_length is None:
            length = len(orjson.dumps(body))
        else:
            length = self._shape_length + len(orjson.dumps(body["input"]))
            if "max_output_tokens" in body:
                length += _CAP_KEY + len(cap)
        input_tokens = estimate_tokens(length, prompt.image_count)
        output_tokens, reasoning_tokens = written.output_tokens, written.reasoning_tokens
        values += (input_tokens, output_tokens, reasoning_tokens, input_tokens + output_tokens)
        encoded = self._templates[bool(written.text)] % tuple(values)
        tokens = (input_tokens, output_tokens, reasoning_tokens)
        return Answered(encoded, tokens, written.finished, self.asked)
