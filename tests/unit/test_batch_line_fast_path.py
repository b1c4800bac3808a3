"""Reading a batch result line the short way (an answer's line first, the blank check only for a
line that is no JSON, the result a named tuple) keeps every result and refusal of the code it
replaced (kept here as the reference): over the stand-in's own answer lines and every shape of
error, refusal, blank and broken line the collection meets."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from lotlens_common.model.batch_files import BatchLineResult, parse_batch_line
from lotlens_common.model.errors import ModelOutputError, client_reason, status_kind
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.translation import translation_request_body
from lotlens_common.model.vision import vision_request_body
from lotlens_openai_standin.answers import answer

# --- the reference: parse_batch_line as it was ------------------------------------------------


@dataclass(frozen=True)
class ReferenceResult:
    custom_id: str
    body: dict[str, Any] | None
    error: str | None
    error_code: str | None = None
    status: int | None = None
    error_type: str | None = None

    @property
    def reason(self) -> str:
        return client_reason(status_kind(self.status, self.error_code), self.error_type, self.error_code)


def _reference_error_object(custom_id: str, error: Mapping[str, Any]) -> ReferenceResult:
    code = error.get("code")
    message = str(error.get("message") or code or "unknown error")
    return ReferenceResult(custom_id, None, f"{code}: {message}" if code else message,
                           str(code) if code else None)


def _reference_response(custom_id: str, response: Mapping[str, Any]) -> ReferenceResult:
    status = response.get("status_code")
    body = response.get("body")
    if status == 200 and isinstance(body, dict):
        return ReferenceResult(custom_id, body, None)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        label = f"HTTP {status} {code}" if code else f"HTTP {status}"
        message = f"{label}: {error.get('message')}"
        if error.get("param"):
            message += f" (param: {error['param']})"
        error_type = error.get("type")
        return ReferenceResult(custom_id, None, message, str(code) if code else f"http_{status}",
                               status if isinstance(status, int) else None,
                               str(error_type) if error_type else None)
    return ReferenceResult(custom_id, None, f"HTTP {status}", f"http_{status}",
                           status if isinstance(status, int) else None)


def reference_parse(raw: bytes) -> ReferenceResult | None:
    if not raw.strip():
        return None
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ModelOutputError(f"a batch result line is not JSON: {exc}") from exc
    if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
        raise ModelOutputError("a batch result line has no custom_id")
    custom_id = line["custom_id"]
    if isinstance(line.get("error"), dict):
        return _reference_error_object(custom_id, line["error"])
    if isinstance(line.get("response"), dict):
        return _reference_response(custom_id, line["response"])
    return ReferenceResult(custom_id, None, "the line has neither a response nor an error", None)


# --- the lines ----------------------------------------------------------------------------------


def _standin_answers(count: int) -> list[dict[str, Any]]:
    """Response bodies the stand-in writes for vision and translation requests."""
    settings = ModelSettings()
    bodies = []
    for i in range(count):
        images = [f"http://127.0.0.1:9/{i}/{k}.png" for k in range(i % 4 + 1)]
        vision = vision_request_body(f"lot {i}", images, settings)
        bodies.append(answer("/v1/responses", vision))
        translation = translation_request_body(f"<p>Dented door, lot {i}</p>", ("en", "de", "ja"), settings)
        bodies.append(answer("/v1/responses", translation))
    return bodies


ERRORS: list[object] = [
    {"message": "The server had an error", "type": "server_error", "param": None, "code": None},
    {"message": "bad image", "type": "invalid_request_error", "param": "input[0].content[2]",
     "code": "invalid_image_format"},
    {"message": "Invalid schema", "type": "invalid_request_error", "param": "text.format.schema",
     "code": "invalid_json_schema"},
    {"type": "rate_limit_error"}, {"code": 7, "message": None}, {}, "not an object", None,
]
STATUSES: list[object] = [200, 400, 404, 429, 500, 200.0, True, "200", None]


def _lines(seed: int) -> list[bytes]:
    """Answer lines, error lines, odd and broken lines, each as OpenAI or a fault could write it."""
    pick = random.Random(seed)
    lines: list[bytes] = []
    for i, body in enumerate(_standin_answers(6)):
        lines.append(orjson.dumps({"id": f"batch_req_{i}", "custom_id": f"lot-{i}", "error": None,
                                   "response": {"status_code": 200, "request_id": f"req_{i}", "body": body}}))
    for code in ("batch_expired", "batch_cancelled", None, ""):
        lines.append(orjson.dumps({"id": "batch_req_e", "custom_id": "lot-e", "response": None,
                                   "error": {"code": code, "message": pick.choice(["gone", None, ""])}}))
    for _ in range(300):
        status, error = pick.choice(STATUSES), pick.choice(ERRORS)
        shape: object = pick.choice([{"error": error}, {"status": "completed", "output": []}, [], None,
                                     "text", {"error": error, "usage": {"input_tokens": 1}}])
        response = pick.choice([{"status_code": status, "body": shape}, {"body": shape},
                                {"status_code": status}, None, "x"])
        line: dict[str, Any] = {"custom_id": pick.choice(["lot-1", "lot-2", 3, None]), "response": response}
        if pick.random() < 0.4:
            line["error"] = pick.choice([None, {"code": "batch_expired", "message": "late"}, error])
        if pick.random() < 0.1:
            del line["custom_id"]
        lines.append(orjson.dumps(line))
    lines += [b"", b"   ", b"\n", b"\t\r\n", b"\x0b\x0c", b"{not json", b"[1, 2]", b"null", b'"lot"',
              b'{"response": {"status_code": 200}}', b'{"custom_id": "a"}', b'{"custom_id": "a"} trailing',
              b'{"custom_id": "a", "response": {"status_code": 200, "body": {"n": 12345678901234567890123}}}',
              b'{"custom_id": "a", "response": {"status_code": 200, "body": {"s": "\\ud800"}}}',
              b'{"custom_id": "a", "response": {"status_code": 200, "body": {}}, "error": {"code": "x"}}',
              b'\xff\xfe', b' {"custom_id": "padded", "response": null} \n']
    return lines


def _outcome(parse: Any, raw: bytes) -> object:
    try:
        result = parse(raw)
    except ModelOutputError as exc:
        return ("refused", str(exc))
    if result is None:
        return None
    return (result.custom_id, result.body, result.error, result.error_code, result.status, result.error_type,
            result.reason)


@pytest.mark.parametrize("seed", range(5))
def test_every_line_reads_as_the_reference_reads_it(seed: int) -> None:
    for raw in _lines(seed):
        assert _outcome(parse_batch_line, raw) == _outcome(reference_parse, raw), raw


def test_an_answer_line_is_its_custom_id_and_body_with_no_error() -> None:
    body = _standin_answers(1)[0]
    line = orjson.dumps({"id": "batch_req_1", "custom_id": "lot-1", "error": None,
                         "response": {"status_code": 200, "request_id": "req_1", "body": body}})
    assert parse_batch_line(line) == BatchLineResult("lot-1", body, None)
    assert parse_batch_line(line + b"\n") == BatchLineResult("lot-1", body, None)
