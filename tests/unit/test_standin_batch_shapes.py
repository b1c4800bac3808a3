"""The lines of a batch share their shape (all but the lot's input and output cap): its checks and
the fixed fields of its answers are worked out once a slice, and every line still gets exactly the
answer it gets when sent alone, refusals included."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.translation import translation_request_body
from lotlens_common.model.vision import vision_request_body
from lotlens_openai_standin import request_checks
from lotlens_openai_standin.answers import CHAT_ENDPOINT, RESPONSES_ENDPOINT, answer
from lotlens_openai_standin.api_errors import ApiError
from lotlens_openai_standin.batch_run import RunState, run_slice

SETTINGS = ModelSettings()
PER_RUN = ("id", "request_id", "created_at", "created")  # random or the clock's: differ from run to run


def _translation(i: int) -> dict[str, Any]:
    # Its output cap differs from lot to lot, as the stage sizes it to the lot's English.
    return translation_request_body(f"<p>Dented bonnet, lot {i}.</p>", ["en", "de", "ru"], SETTINGS,
                                    room=i % 3 + 1)


def _vision(i: int) -> dict[str, Any]:
    images = [f"https://img.example/{i}/{k}.jpg" for k in range(3)]
    return vision_request_body(f"Camry, lot {i}", images, SETTINGS)


def _chat(i: int) -> dict[str, Any]:
    content = [{"type": "image_url", "image_url": {"url": f"https://img.example/{i}.jpg", "detail": "low"}},
               {"type": "text", "text": f"Camry, lot {i}"}]
    # A reasoning model every other lot: those refuse some parameters the others take.
    return {"model": ("gpt-4.1-mini", "o4-mini")[i % 2], "messages": [{"role": "user", "content": content}],
            "max_completion_tokens": 400 + i}


def _same_run(document: Any) -> Any:
    """The document with what differs from run to run blanked, its fields in their order."""
    if isinstance(document, dict):
        return {key: "-" if key in PER_RUN else _same_run(value) for key, value in document.items()}
    if isinstance(document, list):
        return [_same_run(value) for value in document]
    return document


def _in_a_batch(tmp_path: Path, bodies: list[dict[str, Any]], endpoint: str = RESPONSES_ENDPOINT
                ) -> list[bytes]:
    """Each body's result as one slice of a batch runs it: its status and body, as JSON."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(orjson.dumps({"custom_id": f"lot-{i}", "method": "POST", "url": endpoint,
                                              "body": body}) + b"\n" for i, body in enumerate(bodies)))
    state = RunState(str(tmp_path / "output.jsonl"), str(tmp_path / "errors.jsonl"))
    run_slice(source, state, len(bodies), endpoint, None, "seed", dict)
    results: dict[str, bytes] = {}
    for name in ("output.jsonl", "errors.jsonl"):
        for line in map(orjson.loads, (tmp_path / name).read_bytes().splitlines()):
            response = line["response"]
            results[line["custom_id"]] = orjson.dumps([response["status_code"], _same_run(response["body"])])
    return [results[f"lot-{i}"] for i in range(len(bodies))]


def _alone(body: dict[str, Any], endpoint: str = RESPONSES_ENDPOINT) -> bytes:
    """The body's result as a direct call answers it."""
    try:
        return orjson.dumps([200, _same_run(answer(endpoint, copy.deepcopy(body)))])
    except ApiError as refused:
        return orjson.dumps([refused.status, refused.body()])


def test_the_schema_a_batchs_translations_share_is_checked_once_a_slice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each line's strict schema was walked again: the same one 50,000 times in a 50,000-lot job.
    checked: list[object] = []
    whole_check = request_checks.check_json_schema_format

    def counted(fmt: object, param: str) -> None:
        checked.append(fmt)
        whole_check(fmt, param)

    monkeypatch.setattr(request_checks, "check_json_schema_format", counted)
    bodies = [_translation(i) for i in range(40)]
    results = _in_a_batch(tmp_path, bodies)
    assert [orjson.loads(result)[0] for result in results] == [200] * 40
    assert len(checked) == 1, f"the schema its 40 lines share was checked {len(checked)} times"


def test_a_line_of_a_shape_that_passed_is_refused_as_it_is_alone(tmp_path: Path) -> None:
    def changed(body: dict[str, Any], **fields: Any) -> dict[str, Any]:
        return copy.deepcopy(body) | fields

    good = _vision(0)
    image = {"type": "input_image", "image_url": "ftp://img.example/1.jpg", "detail": "auto"}
    bad_input = [{"role": "user", "content": [image, {"type": "input_text", "text": "Camry"}]}]
    bodies = [
        good, _vision(1),
        changed(good, input=bad_input),                          # its shape passed: the input's check
        changed(good, max_output_tokens=15),                     # ... the cap's
        changed(good, max_output_tokens=10**6, input=bad_input),  # both: the input's came first
        changed(good, temperature=0.5),                          # another shape: refused whole
        changed(good, store="no", input=bad_input),              # the input's check came before the store's
        changed(good, stream=True, input=bad_input),             # ... and after the stream's
        changed(good, input="a plain string"), changed(good, input=[]),
        _translation(2), changed(_translation(3), max_output_tokens="many"), _translation(4),
    ]
    in_batch = _in_a_batch(tmp_path, bodies)
    assert in_batch == [_alone(body) for body in bodies]
    assert sum(orjson.loads(result)[0] == 200 for result in in_batch) == 6


def _mutated(body: dict[str, Any], chance: random.Random, chat: bool) -> dict[str, Any]:
    """The body with a few of its fields, messages or parts changed the ways a request goes wrong."""
    body = copy.deepcopy(body)
    values: list[Any] = [None, True, 0, 1.0, 3, 15, 10**6, "x", "ftp://a", [], {}, {"effort": "low"}, [5]]
    for _ in range(chance.choice([0, 1, 1, 2])):
        if chance.random() < 0.5:
            field = chance.choice(["model", "stream", "store", "temperature", "top_p", "reasoning", "colour",
                                   "max_output_tokens", "max_completion_tokens", "max_tokens", "text",
                                   "response_format", "metadata", "instructions"])
            body[field] = chance.choice([*values, "o3-mini", "gpt-4.1", {"format": {"type": "json_schema"}}])
            continue
        message = chance.choice(body.get("messages" if chat else "input") or [{}])
        parts = message.get("content") if isinstance(message, dict) else None
        if isinstance(parts, list) and parts and isinstance(parts[0], dict):
            part = chance.choice(parts)
            part[chance.choice(["type", "text", "image_url", "detail", "role"])] = chance.choice(values)
    return body


@pytest.mark.parametrize("endpoint", [RESPONSES_ENDPOINT, CHAT_ENDPOINT])
def test_every_line_of_a_mixed_batch_gets_the_answer_it_gets_alone(tmp_path: Path, endpoint: str) -> None:
    chat = endpoint == CHAT_ENDPOINT
    chance = random.Random(14)
    templates = [_chat] if chat else [_vision, _translation]
    bodies = [_mutated(chance.choice(templates)(i), chance, chat) for i in range(400)]
    in_batch = _in_a_batch(tmp_path, bodies, endpoint)
    assert in_batch == [_alone(body, endpoint) for body in bodies]
    statuses = {orjson.loads(result)[0] for result in in_batch}
    assert 200 in statuses and 400 in statuses


def test_a_lines_input_tokens_are_counted_from_its_whole_body(tmp_path: Path) -> None:
    # A line's encoded length is worked out from its shape's, its input's and its cap's (the body is
    # not encoded whole again): held to the whole encoding's at each remainder of 4, the cap set,
    # null or left out, the input a string or parts with images.
    bodies: list[dict[str, Any]] = []
    for i in range(24):
        body = _vision(i) | {"input": [{"role": "user", "content": [
            *({"type": "input_image", "image_url": f"https://img.example/{k}.jpg", "detail": "low"}
              for k in range(i % 3)), {"type": "input_text", "text": "é" * (i % 5) + "x" * (i % 4)}]}]}
        if i % 3 == 1:
            body["max_output_tokens"] = None
        elif i % 3 == 2:
            del body["max_output_tokens"]
        bodies.append(body if i % 8 else body | {"input": "a plain string" + "x" * (i % 4)})
    lines = [orjson.loads(result) for result in _in_a_batch(tmp_path, bodies)]
    images = [0 if isinstance(body["input"], str) else i % 3 for i, body in enumerate(bodies)]
    assert [line[1]["usage"]["input_tokens"] for line in lines] == [
        len(orjson.dumps(body)) // 4 + 85 * count for body, count in zip(bodies, images, strict=True)]
