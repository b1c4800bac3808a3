"""The ids the stand-in writes into its answers are of OpenAI's forms, new, and drawn each on its own:
no id is worked out from another, but for what OpenAI's own ids share (a response's items end in
the response's last 16 hex digits).

The forms, from the OpenAI description's examples (openai/openai-openapi @ f85dbe2, as the
stand-in's spec/) and, where it shows none, from batch output files OpenAI wrote (quoted in public
repositories, 2024-11 to 2025-12):
- `resp_`, `msg_`, `rs_`: 48 hex digits; each of the description's eight pairs of a response and
  its message shares the last 16 (resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b,
  msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b);
- `chatcmpl-`: 29 letters and digits (chatcmpl-AyPNinnUqUDYo9SAdA52NobMflmj2);
- `batch_req_`: 32 hex digits, and a batch line's `request_id` 32 hex digits with no prefix
  (batch_req_6938b10e2b788190b33b96fd5a082739, request_id e6680ccd27fff067f1f8a49c2a5175db).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.vision import vision_request_body
from lotlens_openai_standin.answers import CHAT_ENDPOINT, RESPONSES_ENDPOINT, answer
from lotlens_openai_standin.batch_run import RunState, run_slice

FORMS = {
    "line": re.compile(r"batch_req_[0-9a-f]{32}"),
    "request": re.compile(r"[0-9a-f]{32}"),
    "response": re.compile(r"resp_[0-9a-f]{48}"),
    "item": re.compile(r"(msg|rs)_[0-9a-f]{48}"),
    "chat": re.compile(r"chatcmpl-[0-9A-Za-z]{29}"),
}


def _vision_body(**fields: Any) -> dict[str, Any]:
    return {**vision_request_body("Camry", ["https://img.example/1.jpg"], ModelSettings()), **fields}


def _chat_body(**fields: Any) -> dict[str, Any]:
    parts = [{"type": "image_url", "image_url": {"url": "https://img.example/1.jpg"}},
             {"type": "text", "text": "Camry"}]
    return {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": parts}],
            "max_completion_tokens": 400, **fields}


def _batch(tmp_path: Path, endpoint: str, bodies: list[dict[str, Any]], slices: int) -> list[dict[str, Any]]:
    """The lines of the output and error files of a batch of `bodies` run in `slices` slices."""
    folder = tmp_path / endpoint.strip("/").replace("/", "-")
    folder.mkdir()
    source = folder / "in.jsonl"
    source.write_bytes(b"".join(orjson.dumps({"custom_id": f"lot-{i}", "body": body}) + b"\n"
                                for i, body in enumerate(bodies)))
    state = RunState(str(folder / "out.jsonl"), str(folder / "err.jsonl"))
    for _ in range(slices):  # a template each
        run_slice(source, state, len(bodies) // slices, endpoint, None, "seed", dict)
    return [orjson.loads(line) for path in (state.output_path, state.error_path)
            for line in Path(path).read_bytes().splitlines()]


def _answers(tmp_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Batch lines and direct answers of both endpoints: whole, cut in the reasoning (no message),
    refused (cap 15: no body of the endpoint's), two slices of Responses lines."""
    vision = [_vision_body(max_output_tokens=cap) for cap in (4000, 3000, 16, 15)] * 5
    chat = [_chat_body(), _chat_body(model="o4-mini"), _chat_body(temperature=3)] * 2
    lines = _batch(tmp_path, RESPONSES_ENDPOINT, vision, 2) + _batch(tmp_path, CHAT_ENDPOINT, chat, 1)
    direct = [answer(RESPONSES_ENDPOINT, _vision_body()) for _ in range(3)]
    direct += [answer(CHAT_ENDPOINT, _chat_body()) for _ in range(3)]
    return lines, direct


def _ids(line: dict[str, Any] | None, body: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(kind, id) of every id a line or a body holds, the line's first."""
    ids = [("line", line["id"]), ("request", line["response"]["request_id"])] if line else []
    if body is not None and "id" in body:
        ids.append(("chat" if "choices" in body else "response", body["id"]))
        ids += [("item", item["id"]) for item in body.get("output", [])]
    return ids


def _every_answer(tmp_path: Path) -> list[list[tuple[str, str]]]:
    lines, direct = _answers(tmp_path)
    return [_ids(line, line["response"]["body"]) for line in lines] + [_ids(None, body) for body in direct]


def test_every_id_is_of_openais_form(tmp_path: Path) -> None:
    answers = _every_answer(tmp_path)
    # Vision: ten whole (line, request, response, reasoning, message), five cut in the reasoning
    # (no message), five refused (line, request); chat: four whole, two refused; six direct.
    kinds = [kind for ids in answers for kind, _ in ids]
    assert len(kinds) == 10 * 5 + 5 * 4 + 5 * 2 + 4 * 3 + 2 * 2 + 3 * 3 + 3
    for ids in answers:
        for kind, found in ids:
            assert FORMS[kind].fullmatch(found), (kind, found)


def test_no_id_is_worked_out_from_another_but_a_responses_items_from_its_own(tmp_path: Path) -> None:
    # Each id's digits of its own, by what they start and end with: an answer number written into
    # every id of a line made its line, request and response ids end alike, and every id of a
    # template's answers start alike.
    own: list[str] = []
    for ids in _every_answer(tmp_path):
        digits = {kind: found.rsplit("_", 1)[-1].rsplit("-", 1)[-1] for kind, found in ids if kind != "item"}
        own += list(digits.values())
        response = dict(ids).get("response")
        for kind, item in ids:
            if kind == "item":
                assert response and item[-16:] == response[-16:], "an item not ending as its response"
                own.append(item.split("_")[1][:32])
        if response:  # its last 16 digits, held by its items, counted once
            own[own.index(digits["response"])] = digits["response"][:32]
            own.append(response[-16:])
    windows = [digits[:16] for digits in own] + [digits[-16:] for digits in own if len(digits) > 16]
    shared = sorted({window for window in windows if windows.count(window) > 1})
    assert not shared, f"ids sharing digits: {shared}"
