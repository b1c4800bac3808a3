"""The spec check itself: it accepts what OpenAI documents, refuses what it does not, and is current."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.translation import translation_request_body
from lotlens_common.model.vision import vision_request_body
from tests.openai_spec import SUBSET, OpenAISpec, SpecRecorder
from tests.seeds import SHARED

SPEC = OpenAISpec()
REFERENCE = SHARED / "reference" / "openai-openapi" / "openapi.yaml"
URLS = ["https://img.example/1.jpg"]


def test_what_lotlens_sends_is_a_valid_request_that_openai_stores_nothing_of() -> None:
    settings = ModelSettings()
    bodies = [vision_request_body("Camry", URLS, settings),
              translation_request_body("<p>x</p>", ["en", "de"], settings)]
    # `store` defaults to true: every request and answer stayed at OpenAI for 30 days.
    assert [body.get("store") for body in bodies] == [False, False]
    assert SPEC.request_errors("createResponse", vision_request_body("Camry", URLS, settings)) == []
    assert SPEC.request_errors("createResponse", translation_request_body("<p>x</p>", ["en", "de"],
                                                                          settings)) == []
    assert SPEC.request_errors("createBatch", {"input_file_id": "file-1", "endpoint": "/v1/responses",
                                               "completion_window": "24h", "metadata": {"job": "j"}}) == []


@pytest.mark.parametrize(("operation", "body", "where"), [
    ("createBatch", {"input_file_id": "file-1", "endpoint": "/v1/responses", "completion_window": "48h"},
     "completion_window"),
    ("createBatch", {"endpoint": "/v1/responses", "completion_window": "24h"}, "<root>"),
    ("createResponse", {"model": "o4-mini", "input": "x", "temperature": "hot"}, "temperature"),
    ("createResponse", {"model": "o4-mini", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": 7, "detail": "auto"}]}]}, "input"),
    ("createChatCompletion", {"model": "gpt-4.1-mini"}, "<root>"),
    ("createResponse", {"model": "o4-mini", "input": "x", "store": "no"}, "store"),
])
def test_a_wrong_request_is_refused(operation: str, body: dict[str, Any], where: str) -> None:
    errors = SPEC.request_errors(operation, body)
    assert errors and errors[0].startswith(where), errors


def test_a_wrong_answer_is_refused() -> None:
    batch = {"id": "batch_1", "object": "batch", "endpoint": "/v1/responses", "input_file_id": "file-1",
             "completion_window": "24h", "status": "validating", "created_at": 1, "output_file_id": None}
    assert SPEC.answer_errors("retrieveBatch", 200, batch) == []
    assert SPEC.answer_errors("retrieveBatch", 200, batch | {"status": "done"})[0].startswith("status")
    assert SPEC.answer_errors("retrieveBatch", 200, batch | {"created_at": "yesterday"})
    assert SPEC.answer_errors("retrieveBatch", 404, {"error": {"message": "no"}})  # type, param, code missing
    complete = {"message": "no", "type": "invalid_request_error", "param": None, "code": None}
    assert SPEC.answer_errors("retrieveBatch", 404, {"error": complete}) == []


async def _never(*_: Any) -> Any:
    raise AssertionError("not called")


def test_the_recorder_flags_an_accepted_bad_request_but_not_a_refused_one() -> None:
    recorder = SpecRecorder(_never, SPEC)
    bad = json.dumps({"input_file_id": "file-1", "endpoint": "/v1/responses",
                      "completion_window": "1h"}).encode()
    error = json.dumps({"error": {"message": "bad", "type": "invalid_request_error", "param": None,
                                  "code": None}}).encode()
    recorder.check("POST", "/v1/batches", "application/json", bad, 400, error)
    assert recorder.violations == []
    answer = {"id": "batch_1", "object": "batch", "endpoint": "/v1/responses", "input_file_id": "file-1",
              "completion_window": "24h", "status": "validating", "created_at": 1}
    recorder.check("POST", "/v1/batches", "application/json", bad, 200, json.dumps(answer).encode())
    assert len(recorder.violations) == 1 and "completion_window" in recorder.violations[0]
    recorder.check("GET", "/v1/models", "", b"", 200, b"{}")
    assert "not an operation" in recorder.violations[-1]


def test_the_subset_is_derived_from_the_reference_copy() -> None:
    # Not skipped without it: CI runs with `../shared` beside the clone, wherever that is.
    assert REFERENCE.is_file(), f"no reference copy of openapi.yaml at {REFERENCE}"
    subset = json.loads(SUBSET.read_text())
    assert subset["source_sha256"] == hashlib.sha256(REFERENCE.read_bytes()).hexdigest()
