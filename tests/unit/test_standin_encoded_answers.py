"""A batch's answers written from a template of their shape (`response_plan.py`), their input checked
and read in one walk and their schema read once, are the answers the code before (f7e98cad: each
answer built as dicts and encoded whole) gave, byte for byte but for ids and clocks.

What that code gave is frozen, not kept as code. data/standin_answers.jsonl: the lines f7e98cad's
stand-in wrote for data/standin_requests.jsonl (40 requests of both endpoints: LotLens' bodies,
hostile strings, other models, caps that cut, refusals by each check, markers), run as `_written`
runs them. `WALK_DIGEST`, `FILL_DIGEST`: what its input check-then-read and its schema filling gave
for the inputs and schemas `_mutated_inputs` and `_fillings` make. Ids, blanked in those, are
held to OpenAI's forms and to being new by test_standin_ids.py. The frozen answers' descriptions
are one paragraph: these tests leave out the paragraphs and list a description has had since
(`descriptions.description_body`, held by test_standin_descriptions.py), so what they hold is the
writing of the lines, for any text.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from lotlens_common.model.batch_files import parse_batch_line
from lotlens_common.model.response_text import response_output_text
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.vision import vision_request_body
from lotlens_openai_standin import answer_rules
from lotlens_openai_standin.answer_rules import LanguageFaults, schema_filler, strip_outer_paragraph
from lotlens_openai_standin.answers import (
    CHAT_ENDPOINT,
    RESPONSES_ENDPOINT,
    answer,
    answer_json,
    usage_tokens,
)
from lotlens_openai_standin.api_errors import ApiError
from lotlens_openai_standin.batch_run import RunState, run_slice
from lotlens_openai_standin.request_checks import responses_input

DATA = Path(__file__).parent / "data"
# Taken in turn by the structured answers, in the requests' order.
FAULTS: list[LanguageFaults] = [{}, {"ru": "untranslated"}, {"zh-TW": "other_variant"},
                                {"de": "untranslated", "ja": "other_variant"}]
_IDS = re.compile(rb'"(batch_req|resp|rs|msg|chatcmpl)([_-])[0-9a-zA-Z]+"')
# A line's request id, which had the `req_` of the x-request-id header when the frozen lines were written.
_REQUEST_ID = re.compile(rb'"request_id":"[0-9a-f]+"')
_CLOCK = re.compile(rb'"(created_at|created)":\d+')


def _blanked(encoded: bytes) -> bytes:
    blanked = _REQUEST_ID.sub(b'"request_id":"req_-"', _IDS.sub(rb'"\1\2-"', encoded))
    return _CLOCK.sub(rb'"\1":0', blanked)


def _requests() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (DATA / "standin_requests.jsonl").read_bytes().splitlines()]


def _written(requests: Path, folder: Path) -> list[tuple[bytes, dict[str, Any]]]:
    """Each request's result line (ids and clock blanked) and kept answer, in the requests' order, the
    lines of each endpoint run as one batch."""
    lines = requests.read_bytes().splitlines(keepends=True)
    by_endpoint: dict[str, list[bytes]] = {}
    for line in lines:
        by_endpoint.setdefault(orjson.loads(line)["url"], []).append(line)
    faults = itertools.cycle(FAULTS)
    written = {}
    for n, (endpoint, own) in enumerate(by_endpoint.items()):
        source = folder / f"in-{n}.jsonl"
        source.write_bytes(b"".join(own))
        state = RunState(str(folder / f"out-{n}.jsonl"), str(folder / f"err-{n}.jsonl"))
        kept = run_slice(source, state, len(own), endpoint, None, "seed", lambda: next(faults))
        for path in (state.output_path, state.error_path):
            for line in Path(path).read_bytes().splitlines(keepends=True):
                custom_id = orjson.loads(line)["custom_id"]
                written[custom_id] = (_blanked(line), kept[custom_id])
    return [written[orjson.loads(line)["custom_id"]] for line in lines]


@pytest.fixture
def one_paragraph_descriptions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Descriptions as the frozen lines' code wrote them: the first paragraph alone."""
    monkeypatch.setattr(answer_rules, "description_body", lambda image_count, notes: "")


@pytest.mark.usefixtures("one_paragraph_descriptions")
def test_every_line_of_a_batch_is_the_line_the_code_before_wrote(tmp_path: Path) -> None:
    written = _written(DATA / "standin_requests.jsonl", tmp_path)
    frozen = (DATA / "standin_answers.jsonl").read_bytes().splitlines(keepends=True)
    for (line, _), expected in zip(written, frozen, strict=True):
        assert line == expected


def test_each_line_gives_back_what_its_request_sent(tmp_path: Path) -> None:
    written = _written(DATA / "standin_requests.jsonl", tmp_path)
    for request, (line, kept) in zip(_requests(), written, strict=True):
        result, sent = parse_batch_line(line), request["body"]
        assert result is not None and result.custom_id == request["custom_id"]
        assert kept["status"] == orjson.loads(line)["response"]["status_code"]
        body = result.body
        if body is None:
            assert (kept["usable"], kept["tokens"]) == (False, (0, 0, 0)), request
            continue
        assert kept["tokens"] == usage_tokens(body) and body["model"] == sent["model"], request
        if "choices" in body:  # a chat completion
            choice = body["choices"][0]
            whole, text = choice["finish_reason"] == "stop", choice["message"]["content"]
            schema = (sent.get("response_format") or {}).get("json_schema", {}).get("schema")
        else:
            echoed = (body["instructions"], body["max_output_tokens"], body["metadata"] or None)
            assert echoed == (sent.get("instructions"), sent.get("max_output_tokens"), sent.get("metadata"))
            whole = body["status"] == "completed"
            text = response_output_text(body) if whole else ""  # as LotLens reads it
            schema = (sent.get("text") or {}).get("format", {}).get("schema")
        assert not kept["usable"] or whole, request
        if schema is not None and whole:
            assert list(orjson.loads(text)) == list(schema["properties"]), request


@pytest.mark.usefixtures("one_paragraph_descriptions")
def test_a_direct_call_answers_as_the_batch_line_of_its_request() -> None:
    frozen = (DATA / "standin_answers.jsonl").read_bytes().splitlines()
    faults = itertools.cycle(FAULTS)
    for request, line in zip(_requests(), frozen, strict=True):
        response = orjson.loads(line)["response"]
        try:
            direct = (200, orjson.dumps(answer(request["url"], request["body"], lambda: next(faults))))
        except ApiError as refused:
            direct = (refused.status, orjson.dumps(refused.body()))
        assert (direct[0], _blanked(direct[1])) == (response["status_code"],
                                                    orjson.dumps(response["body"])), request["custom_id"]


def _vision_body(**fields: Any) -> dict[str, Any]:
    body = vision_request_body("Camry", ["https://img.example/1.jpg"], ModelSettings())
    return {**body, **fields}


def _chat_body(**fields: Any) -> dict[str, Any]:
    parts = [{"type": "image_url", "image_url": {"url": "https://img.example/1.jpg"}},
             {"type": "text", "text": "Camry"}]
    return {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": parts}],
            "max_completion_tokens": 400, **fields}


def _part(body: dict[str, Any], index: int, **fields: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["input" if "input" in body else "messages"][-1]["content"][index].update(fields)
    return body


GPT_41 = {"model": "gpt-4.1-mini", "reasoning": None}
# What goes wrong in a body -> the body, and OpenAI's status and error code for it. A change of a
# per-line field (the input, the messages, the cap) is checked by the line checks in a batch.
REFUSALS: dict[str, tuple[dict[str, Any], int, str | None]] = {
    "store not a boolean": (_vision_body(store="no"), 400, "invalid_type"),
    "temperature 3": (_vision_body(**GPT_41, temperature=3), 400, "decimal_above_max_value"),
    "top_p 2": (_vision_body(**GPT_41, top_p=2), 400, "decimal_above_max_value"),
    "temperature on a reasoning model": (_vision_body(temperature=0.5), 400, "unsupported_parameter"),
    "effort on gpt-4o": (_vision_body(model="gpt-4o"), 400, "unsupported_parameter"),
    "instructions not a string": (_vision_body(instructions=5), 400, "invalid_type"),
    "unknown model": (_vision_body(model="gpt-9"), 400, "model_not_found"),
    "images to a text-only model": (_vision_body(model="o3-mini"), 400, None),
    "unknown parameter": (_vision_body(colour="red"), 400, "unknown_parameter"),
    "max_tokens on Responses": (_vision_body(max_tokens=100), 400, "unsupported_parameter"),
    "stream": (_vision_body(stream=True), 400, "unsupported_value"),
    "cap not an integer": (_vision_body(max_output_tokens="many"), 400, "invalid_type"),
    "cap below 16": (_vision_body(max_output_tokens=15), 400, "integer_below_min_value"),
    "cap past the model's": (_vision_body(max_output_tokens=10**6), 400, "integer_above_max_value"),
    "input an object": (_vision_body(input={}), 400, "invalid_type"),
    "input missing": (_vision_body(input=None), 400, "missing_required_parameter"),
    "an ftp image": (_part(_vision_body(), 0, image_url="ftp://img.example/1.jpg"), 400, "invalid_value"),
    "an image detail unknown": (_part(_vision_body(), 0, detail="tiny"), 400, "invalid_value"),
    "a text part not a string": (_part(_vision_body(), 1, text=7), 400, "invalid_type"),
    "an image it cannot read": (_part(_vision_body(), 0, image_url="https://x/standin-unsupported.jpg"),
                                400, "invalid_image_format"),
    "an image it cannot fetch": (_part(_vision_body(), 0, image_url="https://x/standin-unfetchable.jpg"),
                                 400, "invalid_image_url"),
    "the error marker": (_part(_vision_body(), 1, text="[standin:error]"), 500, None),
    "chat: temperature 3": (_chat_body(temperature=3), 400, "decimal_above_max_value"),
    "chat: max_tokens on a reasoning model": (_chat_body(model="o4-mini", max_completion_tokens=None,
                                                         max_tokens=100), 400, "unsupported_parameter"),
    "chat: unknown model": (_chat_body(model="gpt-9"), 404, "model_not_found"),
    "chat: cap past the model's": (_chat_body(max_completion_tokens=10**6), 400, "integer_above_max_value"),
    "chat: an ftp image": (_part(_chat_body(), 0, image_url={"url": "ftp://x"}), 400, "invalid_value"),
    "chat: messages empty": (_chat_body(messages=[]), 400, "invalid_type"),
}


@pytest.mark.parametrize("wrong", list(REFUSALS))
def test_each_check_refuses_its_fault_with_openais_code_directly_and_in_a_batch(tmp_path: Path,
                                                                                  wrong: str) -> None:
    body, status, code = REFUSALS[wrong]
    chat = "messages" in body
    endpoint, good = (CHAT_ENDPOINT, _chat_body()) if chat else (RESPONSES_ENDPOINT, _vision_body())
    with pytest.raises(ApiError) as refused:
        answer_json(endpoint, body)
    assert (refused.value.status, refused.value.code) == (status, code)
    # After a good line of its shape, whose checks the next lines of that shape skip.
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(orjson.dumps({"custom_id": custom_id, "body": line}) + b"\n"
                                for custom_id, line in (("good", good), ("wrong", body))))
    state = RunState(str(tmp_path / "out.jsonl"), str(tmp_path / "err.jsonl"))
    run_slice(source, state, 2, endpoint, None, "seed", dict)
    [line] = [orjson.loads(line) for line in (tmp_path / "err.jsonl").read_bytes().splitlines()]
    assert line["custom_id"] == "wrong" and line["response"]["status_code"] == status
    assert line["response"]["body"]["error"]["code"] == code


# --- the input walk and the schema filling, held to what f7e98cad gave ------------------------------

WALK_DIGEST = "c3cf0bad204c3e42ae8bdcb26414c8b2dc7e9a68b0760c8ddd8a119511665703"
FILL_DIGEST = "0a2e85636ea6dd8e541a2f6007348ca47bf280756846eb8c881f02452a10d677"


def _digest(outcomes: list[Any]) -> str:
    return hashlib.sha256(orjson.dumps(outcomes)).hexdigest()


def _mutated_inputs(count: int) -> Iterator[dict[str, Any]]:
    """Responses bodies (their input alone) of a user message with images and text, gone wrong at
    random: items and parts of other types, roles, contents and fields of every kind."""
    chance = random.Random(3)
    values: list[Any] = [None, 0, "x", "user", "system", "tool", "input_image", "input_text", "input_file",
                         "message", "item_reference", "https://a/b.png", "ftp://a", "low", "auto", [], {}]
    for i in range(count):
        images = [{"type": "input_image", "image_url": f"https://img.example/{i}/{k}.jpg", "detail": "auto"}
                  for k in range(i % 4)]
        text = {"type": "input_text", "text": f"lot {i}"}
        items: list[Any] = [{"role": "user", "content": [*images, text]}]
        for _ in range(chance.randrange(4)):
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
        yield {"input": items}


def _outcome(read: Callable[[dict[str, Any]], object], body: dict[str, Any]) -> object:
    try:
        return read(body)
    except ApiError as refused:
        return refused.status, refused.body()


def test_the_input_is_checked_and_read_in_one_walk_as_in_the_two_before() -> None:
    outcomes = [_outcome(responses_input, body) for body in _mutated_inputs(3000)]
    assert _digest(outcomes) == WALK_DIGEST


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


def _fillings(fill: Callable[[dict[str, Any], str, LanguageFaults], object]) -> list[object]:
    """How `fill` fills 2,000 random schemas (objects, arrays, type lists, nulls, non-dict
    sub-schemas, language tags and other keys) from sources with and without markup."""
    chance = random.Random(5)
    sources = ["<p>Dented <b>bonnet</b> &amp; 2 doors.</p>", "  plain text  ", "<p>Ω and é</p>", ""]
    faults: list[LanguageFaults] = [{}, {"de": "untranslated"}, {"notes": "untranslated"},
                                    {"zh-Hant": "other_variant", "ja": "untranslated"}]
    filled: list[object] = []
    for _ in range(2000):
        schema = _schema(chance)
        filled += [fill(schema, source, chance.choice(faults)) for source in sources]
    return filled


def test_a_schema_read_once_fills_each_answer_as_when_read_each_time() -> None:
    def fill(schema: dict[str, Any], source: str, faults: LanguageFaults) -> object:
        return schema_filler(schema)(source, strip_outer_paragraph(source), faults)

    assert _digest(_fillings(fill)) == FILL_DIGEST

