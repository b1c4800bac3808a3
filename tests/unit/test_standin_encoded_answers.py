"""A batch's answers written from a template of their shape (`response_plan.py`), their input checked
and read in one walk and their schema read once, are the answers the code they replaced gave, byte
for byte but for ids and clocks. The replaced code is kept here as the reference: each answer built
as dicts and encoded whole, the input checked in one walk and read in another, the schema filled by
reading it again for each answer."""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.translation import translation_request_body
from lotlens_common.model.vision import vision_request_body
from lotlens_openai_standin.answer_rules import (
    Prompt,
    Written,
    _is_language_key,
    responses_prompt,
    responses_schema,
    schema_filler,
    strip_outer_paragraph,
    translated,
    vision_text,
    write_within,
)
from lotlens_openai_standin.answers import RESPONSES_ENDPOINT, answer_json
from lotlens_openai_standin.api_errors import ApiError
from lotlens_openai_standin.batch_run import RunState, run_slice
from lotlens_openai_standin.models import is_reasoning_model
from lotlens_openai_standin.request_checks import (
    ROLES,
    _check_responses_part,
    _invalid_type,
    _invalid_value,
    _missing,
    responses_input,
)

SETTINGS = ModelSettings()
# Ids are random and the clock moves: both are blanked before answers are compared.
_IDS = re.compile(rb'"(batch_req|req|resp|rs|msg)_[0-9a-f]+"')
_CLOCK = re.compile(rb'"created_at":\d+')


def _blanked(encoded: bytes) -> bytes:
    return _CLOCK.sub(b'"created_at":0', _IDS.sub(rb'"\1_-"', encoded))


# --- the reference: the code as it was ----------------------------------------------------------


def _reference_input_check(body: Mapping[str, Any]) -> None:
    items = body.get("input")
    if items is None:
        raise _missing("input")
    if isinstance(items, str):
        return
    if not isinstance(items, list):
        raise _invalid_type("input", "a string or an array", items)
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _invalid_type(f"input[{i}]", "an object", item)
        if item.get("type", "message") != "message":
            continue
        if item.get("role") not in ROLES:
            raise _invalid_value(f"input[{i}].role", item.get("role"), ROLES)
        content = item.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise _invalid_type(f"input[{i}].content", "a string or an array", content)
        for j, part in enumerate(content):
            _check_responses_part(part, i, j)


def _reference_read(body: Mapping[str, Any]) -> tuple[list[str], str]:
    items = body.get("input")
    messages = [{"role": "user", "content": items}] if isinstance(items, str) else list(items or [])
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
        texts, text = 0, ""
        for part in content:
            if isinstance(part, dict):
                kind = part.get("type")
                if kind == "input_image":
                    images.append(part)
                elif kind == "input_text":
                    texts, text = texts + 1, part.get("text", "")
        if from_user:
            last_text = str(text) if texts else ""
    return [str(part.get("image_url")) for part in images], last_text


def _reference_fill(schema: Mapping[str, Any], key: str, source: str, faults: Mapping[str, str]) -> Any:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: _reference_fill(sub if isinstance(sub, dict) else {}, name, source, faults)
                for name, sub in properties.items()}
    if kind == "array":
        items = schema.get("items")
        return [_reference_fill(items, key, source, faults)] if isinstance(items, dict) else []
    if kind in ("number", "integer"):
        return 0
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    fault = faults.get(key)
    if fault == "untranslated":
        return source
    if _is_language_key(key):
        return translated(key, source, other_variant=fault == "other_variant")
    return strip_outer_paragraph(source)


def _reference_object(body: Mapping[str, Any], prompt: Prompt, faults: Mapping[str, str]) -> dict[str, Any]:
    model = str(body["model"])
    reasoning_model = is_reasoning_model(model)
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    text_field = body.get("text")
    if isinstance(text_field, dict) and isinstance(text_field.get("format"), dict):
        text_config = {"format": text_field["format"], "verbosity": text_field.get("verbosity", "medium")}
    else:
        text_config = {"format": {"type": "text"}, "verbosity": "medium"}
    output: list[dict[str, Any]] = []
    if reasoning_model:
        output.append({"id": "rs_0", "type": "reasoning", "summary": []})
    if prompt.schema is None:
        answer = vision_text(prompt)
    else:
        answer = orjson.dumps(_reference_fill(prompt.schema, "", prompt.last_text, faults)).decode()
    written = write_within(answer, model, body.get("max_output_tokens"))
    if prompt.wants_incomplete:
        written = Written("", False, written.reasoning_tokens, written.reasoning_tokens)
    status, incomplete = "completed", None
    if not written.finished:
        status, incomplete = "incomplete", {"reason": "max_output_tokens"}
    if written.text:
        output.append({
            "id": "msg_0", "type": "message", "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": written.text, "annotations": [], "logprobs": []}],
        })
    input_tokens = len(orjson.dumps(body)) // 4 + 85 * prompt.image_count
    output_tokens, reasoning_tokens = written.output_tokens, written.reasoning_tokens
    return {
        "id": "resp_0", "object": "response", "created_at": 0, "status": status,
        "background": False, "error": None, "incomplete_details": incomplete,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None, "model": model, "output": output, "parallel_tool_calls": True,
        "previous_response_id": None, "prompt_cache_key": None,
        "reasoning": ({"effort": (reasoning or {}).get("effort", "medium"), "summary": None}
                      if reasoning_model else {"effort": None, "summary": None}),
        "safety_identifier": None, "service_tier": "default", "store": body.get("store", True),
        "temperature": None if reasoning_model else body.get("temperature", 1.0),
        "text": text_config, "tool_choice": "auto", "tools": [], "top_logprobs": 0,
        "top_p": None if reasoning_model else body.get("top_p", 1.0), "truncation": "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": None, "metadata": body.get("metadata") or {},
    }


def _reference_line(custom_id: str, status: int, body: Mapping[str, Any]) -> bytes:
    response = {"status_code": status, "request_id": "req_0", "body": body}
    line = {"id": "batch_req_0", "custom_id": custom_id, "response": response, "error": None}
    return orjson.dumps(line) + b"\n"


# --- the bodies -----------------------------------------------------------------------------------


def _vision(i: int) -> dict[str, Any]:
    images = [f"https://img.example/{i}/{k}.jpg" for k in range(i % 4)]
    return vision_request_body(f"Camry \"XV70\", lot {i}: 100% <b>dented</b> & scratched", images, SETTINGS)


def _translation(i: int) -> dict[str, Any]:
    return translation_request_body(f"<p>Dented bonnet, lot {i}.</p>", ["en", "de", "ru", "zh-TW", "fil"],
                                    SETTINGS, room=i % 3 + 1)


def _varied(body: dict[str, Any], chance: random.Random) -> dict[str, Any]:
    """The body with what changes an answer's fixed or own fields changed, or a field gone wrong."""
    body = copy.deepcopy(body)
    change = chance.randrange(12)
    if change == 0:
        body["max_output_tokens"] = chance.choice([16, 40, 64, 70, 90, 10**6, "many", None])
    elif change == 1:
        body["model"] = chance.choice(["gpt-4.1-mini", "o3", "gpt-5-nano", "o3-mini"])
        body.pop("reasoning", None)
    elif change == 2:
        body["instructions"] = chance.choice(["100% sure: %s %b %% %(x)d", None, 5])
    elif change == 3:
        body["metadata"] = {"lot": "%d", "n": "1"}
    elif change == 4:
        last = body["input"][-1]["content"][-1]
        last["text"] = chance.choice(["[standin:incomplete] x", "[standin:error]", "standin:hostile-html",
                                      "standin:control-characters \x00", "<p>%s</p>", 7])
    elif change == 5:
        body["input"] = chance.choice(["a plain string", [], [{"role": "user", "content": "hi"}], {}])
    elif change == 6:
        url = chance.choice(["ftp://x", "data:image/png;base64,AA", None, "https://x/standin-unsupported"])
        image = {"type": "input_image", "detail": chance.choice(["low", None]), "image_url": url}
        body["input"][0]["content"].insert(0, image)
    elif change == 7:
        body["store"] = chance.choice([True, "no"])
    elif change == 8 and not is_reasoning_model(str(body["model"])):
        body["temperature"] = chance.choice([0.5, 1, 3])
    elif change == 9:
        body["reasoning"] = {"effort": chance.choice(["high", "low"])}
    return body


def _bodies(count: int, seed: int) -> list[dict[str, Any]]:
    chance = random.Random(seed)
    return [_varied(chance.choice([_vision, _translation])(i), chance) for i in range(count)]


# --- the tests --------------------------------------------------------------------------------------


def _read_outcome(read: Any, body: Mapping[str, Any]) -> object:
    try:
        return read(body)
    except ApiError as refused:
        return refused.status, refused.body()


def _reference_outcome(body: Mapping[str, Any]) -> object:
    try:
        _reference_input_check(body)
    except ApiError as refused:
        return refused.status, refused.body()
    return _reference_read(body)


def test_the_input_is_checked_and_read_in_one_walk_as_in_two() -> None:
    chance = random.Random(3)
    values: list[Any] = [None, 0, "x", "user", "system", "tool", "input_image", "input_text", "input_file",
                         "message", "item_reference", "https://a/b.png", "ftp://a", "low", "auto", [], {}]
    for i in range(3000):
        body = _vision(i) if i % 2 else _translation(i)
        for _ in range(chance.randrange(4)):
            items = body["input"]
            if chance.random() < 0.2:
                other = {"type": chance.choice(values), "content": [{"type": "input_text"}]}
                role = {"role": chance.choice(values), "content": chance.choice(values)}
                items.append(chance.choice([role, other, chance.choice(values)]))
                continue
            item = chance.choice(items)
            if not isinstance(item, dict):
                continue
            parts = item.get("content")
            if isinstance(parts, list) and parts and chance.random() < 0.8:
                part = chance.choice(parts)
                if isinstance(part, dict):
                    field = chance.choice(["type", "text", "image_url", "detail", "file_id"])
                    part[field] = chance.choice(values)
                else:
                    parts.append(chance.choice(values))
            else:
                item[chance.choice(["role", "content", "type"])] = chance.choice(values)
        assert _read_outcome(responses_input, body) == _reference_outcome(body), body


def _schema(chance: random.Random, depth: int = 0) -> dict[str, Any]:
    kinds: list[Any] = ["string", "number", "integer", "boolean", "null", None, ["string", "null"],
                        ["null"], ["null", "integer"]]
    if depth < 3:
        kinds += ["object", "object", "array", ["array", "null"]]
    kind = chance.choice(kinds)
    schema: dict[str, Any] = {} if kind is None else {"type": kind}
    if kind == "object":
        names = chance.sample(["de", "ru", "zh-Hant", "pt-BR", "fil", "ja", "notes", "Title", "x-1", "en"],
                              chance.randrange(5))
        schema["properties"] = {name: chance.choice([_schema(chance, depth + 1), "junk"]) for name in names}
    elif kind in ("array", ["array", "null"]):
        schema["items"] = chance.choice([_schema(chance, depth + 1), "junk"])
    return schema


def test_a_schema_read_once_fills_each_answer_as_when_read_each_time() -> None:
    chance = random.Random(5)
    sources = ["<p>Dented <b>bonnet</b> &amp; 2 doors.</p>", "  plain text  ", "<p>Ω and é</p>", ""]
    faults: list[dict[str, Any]] = [{}, {"de": "untranslated"}, {"notes": "untranslated"},
                                    {"zh-Hant": "other_variant", "ja": "untranslated"}]
    for _ in range(2000):
        schema = _schema(chance)
        fill = schema_filler(schema)
        for source in sources:
            fault = chance.choice(faults)
            expected = _reference_fill(schema, "", source, fault)
            assert fill(source, strip_outer_paragraph(source), fault) == expected


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("faults", [{}, {"ru": "untranslated"}, {"zh-TW": "other_variant"}])
def test_every_line_of_a_batch_is_the_line_built_from_dicts(tmp_path: Path, seed: int,
                                                              faults: dict[str, Any]) -> None:
    bodies = _bodies(300, seed)
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(orjson.dumps({"custom_id": f"lot-{i} \"%s\"", "method": "POST",
                                              "url": RESPONSES_ENDPOINT, "body": body}) + b"\n"
                                for i, body in enumerate(bodies)))
    state = RunState(str(tmp_path / "out.jsonl"), str(tmp_path / "err.jsonl"))
    run_slice(source, state, len(bodies), RESPONSES_ENDPOINT, None, "seed", lambda: faults)
    written: dict[str, bytes] = {}
    for name in ("out.jsonl", "err.jsonl"):
        for line in (tmp_path / name).read_bytes().splitlines(keepends=True):
            written[orjson.loads(line)["custom_id"]] = line
    statuses = set()
    for i, body in enumerate(bodies):
        custom_id = f"lot-{i} \"%s\""
        try:
            answered = answer_json(RESPONSES_ENDPOINT, copy.deepcopy(body), lambda: faults)
        except ApiError as refused:
            expected = _reference_line(custom_id, refused.status, refused.body())
            statuses.add(refused.status)
        else:
            prompt = responses_prompt(_reference_read(body), responses_schema(body))
            reference = _reference_object(body, prompt, faults)
            assert _blanked(answered.body) == _blanked(orjson.dumps(reference)), body
            expected = _reference_line(custom_id, 200, reference)
            statuses.add(200)
        assert _blanked(written[custom_id]) == _blanked(expected), body
    assert {200, 400, 500} <= statuses
