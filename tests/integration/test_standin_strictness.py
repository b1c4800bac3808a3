"""The stand-in refuses what the real API refuses, per model family, with OpenAI's error bodies."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import httpx2
import pytest

from lotlens_common.model.batch_files import batch_line
from lotlens_common.model.errors import ModelOutputError
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.translation import translation_request_body
from lotlens_common.model.vision import parse_vision_response, vision_request_body
from tests.standin import Standin, batch_reaching, serve_standin

URL = "https://img.example/lot/1.jpg"
LONG = "A long note about the lot. " * 40


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    with serve_standin(tmp_path_factory.mktemp("strict-models")) as running:
        yield running


def _text(text: str, images: int = 0) -> list[dict[str, Any]]:
    parts = [{"type": "input_image", "image_url": URL, "detail": "auto"}] * images
    return [{"role": "user", "content": [*parts, {"type": "input_text", "text": text}]}]


def _post(standin: Standin, path: str, body: dict[str, Any]) -> httpx2.Response:
    return httpx2.post(f"{standin.base_url}{path}", json=body, timeout=10)


REFUSED: dict[str, tuple[dict[str, Any], int, str, str | None]] = {
    "max_tokens on Responses": ({"model": "gpt-4.1-mini", "max_tokens": 100}, 400, "max_tokens",
                                "unsupported_parameter"),
    "max_completion_tokens on Responses": ({"model": "o4-mini", "max_completion_tokens": 100}, 400,
                                           "max_completion_tokens", "unsupported_parameter"),
    "an unknown parameter": ({"model": "gpt-4.1-mini", "colour": "red"}, 400, "colour", "unknown_parameter"),
    "max_output_tokens below 16": ({"model": "gpt-4.1-mini", "max_output_tokens": 15}, 400,
                                   "max_output_tokens", "integer_below_min_value"),
    "max_output_tokens above the model's": ({"model": "gpt-4.1-mini", "max_output_tokens": 32_769}, 400,
                                            "max_output_tokens", "integer_above_max_value"),
    "temperature 3": ({"model": "gpt-4.1-mini", "temperature": 3}, 400, "temperature",
                      "decimal_above_max_value"),
    "temperature -0.1": ({"model": "gpt-4.1", "temperature": -0.1}, 400, "temperature",
                         "decimal_below_min_value"),
    "temperature on a reasoning model": ({"model": "o4-mini", "temperature": 1}, 400, "temperature",
                                         "unsupported_parameter"),
    "temperature on gpt-5": ({"model": "gpt-5-mini", "temperature": 0.2}, 400, "temperature",
                             "unsupported_parameter"),
    "an unknown model": ({"model": "gpt-9-ultra"}, 400, "model", "model_not_found"),
    "store not a boolean": ({"model": "gpt-4.1-mini", "store": "false"}, 400, "store", "invalid_type"),
    "instructions not a string": ({"model": "gpt-4.1-mini", "instructions": ["Describe"]}, 400,
                                  "instructions", "invalid_type"),
    "images to a text-only model": ({"model": "o3-mini", "input": _text("x", images=1)}, 400, "input", None),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_like_the_real_api(standin: Standin, case: str) -> None:
    extra, status, param, code = REFUSED[case]
    response = _post(standin, "/responses", {"input": _text("Camry"), **extra})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


def test_lotlens_asks_openai_to_store_none_of_its_responses(standin: Standin) -> None:
    # `store` defaults to true (openapi.yaml, CreateResponse): every lot's request and answer
    # (signed image URLs, the descriptions) stayed at OpenAI for 30 days.
    settings = ModelSettings()
    for body in (vision_request_body("Camry", [URL], settings),
                 translation_request_body("<p>Dented front bumper.</p>", ["en", "de"], settings)):
        answer = _post(standin, "/responses", body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["store"] is False


def test_chat_answers_404_for_an_unknown_model(standin: Standin) -> None:
    response = _post(standin, "/chat/completions", {"model": "gpt-9", "messages": [
        {"role": "user", "content": "hi"}]})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_dated_snapshots_share_their_family(standin: Standin) -> None:
    body = {"model": "gpt-4.1-mini-2025-04-14", "input": _text("Camry", images=1), "temperature": 0.2}
    assert _post(standin, "/responses", body).json()["status"] == "completed"
    assert _post(standin, "/responses", body | {"model": "o4-mini-2025-04-16", "temperature": None}).json()[
        "output"][0]["type"] == "reasoning"


def test_an_answer_longer_than_max_output_tokens_ends_incomplete(standin: Standin) -> None:
    full = _post(standin, "/responses", {"model": "gpt-4.1-mini", "input": _text(LONG)}).json()
    assert full["status"] == "completed" and full["usage"]["output_tokens"] > 16
    cut = _post(standin, "/responses", {"model": "gpt-4.1-mini", "input": _text(LONG),
                                        "max_output_tokens": 16}).json()
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert cut["usage"]["output_tokens"] == 16
    message = cut["output"][-1]
    assert message["status"] == "incomplete"
    assert full["output"][-1]["content"][0]["text"].startswith(message["content"][0]["text"])
    with pytest.raises(ModelOutputError, match="max_output_tokens"):
        parse_vision_response(cut)


def test_a_reasoning_model_can_think_its_whole_budget_away(standin: Standin) -> None:
    body = vision_request_body("Camry", [URL], ModelSettings(vision_max_output_tokens=32))
    cut = _post(standin, "/responses", body).json()
    assert cut["status"] == "incomplete" and [item["type"] for item in cut["output"]] == ["reasoning"]
    assert cut["usage"]["output_tokens_details"]["reasoning_tokens"] == 32


def test_chat_stops_at_max_completion_tokens(standin: Standin) -> None:
    response = _post(standin, "/chat/completions", {"model": "gpt-4.1-mini", "max_completion_tokens": 5,
                                                    "messages": [{"role": "user", "content": LONG}]}).json()
    assert response["choices"][0]["finish_reason"] == "length"
    assert response["usage"]["completion_tokens"] == 5


def test_a_refused_line_goes_to_the_error_file_and_the_rest_of_the_batch_runs(standin: Standin,
                                                                               tmp_path: Path) -> None:
    good = vision_request_body("fine", [URL], ModelSettings(vision_model="gpt-4.1-mini"))
    lines = batch_line("lot-0:vision", good) + batch_line("lot-1:vision", good | {"temperature": 3})
    api = httpx2.Client(base_url=standin.base_url, timeout=10)
    file_id = api.post("/files", files={"file": ("in.jsonl", lines)}, data={"purpose": "batch"}).json()["id"]
    batch = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/responses",
                                       "completion_window": "24h"}).json()
    batch = batch_reaching(api, batch["id"], ("completed", "failed"), timeout_s=60)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    content = api.get(f"/files/{batch['error_file_id']}/content").text
    [error] = [json.loads(line) for line in content.splitlines()]
    assert error["custom_id"] == "lot-1:vision" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["code"] == "decimal_above_max_value"


class _Zeros(io.RawIOBase):
    """`size` bytes of a JSONL-looking upload, made as they are read (never held whole)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = b"x" * count
        self.left -= count
        return count


def test_a_batch_file_one_byte_over_200_mb_is_refused_as_openai_refuses_it(standin: Standin) -> None:
    """OpenAI's limit is "200 MB": read as 200 MiB here, a file of 200,000,001 bytes was accepted
    that OpenAI may refuse, and no test could reach the client's own limit (limits.py reads the
    figure as 200,000,000). The refusal's text is OpenAI's, with no code: the client must not need
    one to shrink its files."""
    upload = cast(IO[bytes], _Zeros(200_000_001))
    answer = httpx2.post(f"{standin.base_url}/files", data={"purpose": "batch"}, timeout=120,
                         files={"file": ("big.jsonl", upload, "application/jsonl")})
    assert answer.status_code == 400, answer.text[:200]
    error = answer.json()["error"]
    assert error["message"] == "File is too large." and error["code"] is None
