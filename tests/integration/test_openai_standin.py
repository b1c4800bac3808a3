"""The OpenAI stand-in driven through the official SDK and LotLens' own model code."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import openai
import pytest

from lotlens_common.model.batch_files import BatchLineResult, batch_line, parse_batch_line
from lotlens_common.model.errors import (
    ModelOutputError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelUnavailableError,
)
from lotlens_common.model.openai_client import OpenAIBatches, call_responses, make_openai_client
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.translation import parse_translation_response, translation_request_body
from lotlens_common.model.vision import parse_vision_response, vision_request_body
from tests.standin import Standin, description, serve_standin, translation

T = TypeVar("T")
SETTINGS = ModelSettings()
URLS = ["https://img.example/lot/1.jpg", "https://img.example/lot/2.jpg", "https://img.example/lot/3.jpg"]
TERMINAL = ("completed", "failed", "expired", "cancelled")


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    with serve_standin(tmp_path_factory.mktemp("standin")) as running:
        yield running


@pytest.fixture(scope="module")
def strict_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    with serve_standin(tmp_path_factory.mktemp("strict"), api_key="sk-test-key",
                       enqueued_token_limit=50) as running:
        yield running


@pytest.fixture(autouse=True)
def _reset(standin: Standin) -> None:
    standin.control.post("/_standin/reset").raise_for_status()


def run(factory: Callable[[openai.AsyncOpenAI], Awaitable[T]], standin: Standin) -> T:
    """Run one coroutine with a fresh client (clients belong to their event loop)."""

    async def main() -> T:
        client = make_openai_client(standin.api_key, standin.base_url, timeout=10)
        async with client:
            return await factory(client)

    return asyncio.run(main())


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def vision_lines(notes: list[str], model: str | None = None) -> list[bytes]:
    settings = ModelSettings(vision_model=model) if model else SETTINGS
    return [batch_line(f"lot-{i}:vision", vision_request_body(text, URLS, settings))
            for i, text in enumerate(notes)]


async def wait_terminal(batches: OpenAIBatches, batch_id: str,
                        first_status: str = "validating") -> tuple[dict[str, Any], list[str]]:
    seen: list[str] = [first_status]
    for _ in range(200):
        batch = await batches.retrieve_batch(batch_id)
        if not seen or seen[-1] != batch["status"]:
            seen.append(batch["status"])
        if batch["status"] in TERMINAL:
            return batch, seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"batch {batch_id} stuck in {seen}")


async def read_results(batches: OpenAIBatches, file_id: str | None) -> dict[str, BatchLineResult]:
    if file_id is None:
        return {}
    lines = [line async for line in batches.iter_file_lines(file_id)]
    return {result.custom_id: result for result in map(parse_batch_line, lines) if result is not None}


async def run_batch(client: openai.AsyncOpenAI, path: Path, metadata: dict[str, str] | None = None) -> tuple[
        dict[str, Any], list[str], dict[str, BatchLineResult], dict[str, BatchLineResult]]:
    batches = OpenAIBatches(client)
    batch = await batches.create_batch(await batches.upload_batch_file(path), metadata or {"job": "test"})
    batch, seen = await wait_terminal(batches, batch["id"], batch["status"])
    return (batch, seen, await read_results(batches, batch.get("output_file_id")),
            await read_results(batches, batch.get("error_file_id")))


# --- the happy paths ----------------------------------------------------------------------------


def test_vision_batch_goes_through_every_status_to_the_deterministic_text(standin: Standin,
                                                                         tmp_path: Path) -> None:
    notes = ["2019 Toyota Camry, front collision", "2020 Honda Civic, rear damage & scratches", "Ford F-150"]
    path = write_lines(tmp_path / "vision.jsonl", vision_lines(notes))
    batch, seen, output, errors = run(lambda c: run_batch(c, path, {"job": "vision-1", "stage": "vision"}),
                                      standin)
    order = ["validating", "in_progress", "finalizing", "completed"]
    assert seen[0] == "validating" and seen[-1] == "completed"
    assert sorted(seen, key=order.index) == seen  # polling may skip a phase, never reorder them
    assert batch["created_at"] <= batch["in_progress_at"] <= batch["finalizing_at"] <= batch["completed_at"]
    assert batch["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert batch["error_file_id"] is None and errors == {}
    assert batch["metadata"] == {"job": "vision-1", "stage": "vision"} and batch["model"] == "o4-mini"
    for key in ("in_progress_at", "finalizing_at", "completed_at", "expires_at"):
        assert isinstance(batch[key], int)
    texts = {cid: parse_vision_response(r.body or {}) for cid, r in output.items()}
    assert texts == {
        "lot-0:vision": description(3, "2019 Toyota Camry, front collision"),
        "lot-1:vision": description(3, "2020 Honda Civic, rear damage & scratches"),
        "lot-2:vision": description(3, "Ford F-150"),
    }
    assert texts["lot-1:vision"].startswith(
        "<p>Standin vision: 3 image(s) reviewed. 2020 Honda Civic, rear damage &amp; scratches</p><p>")
    first = output["lot-0:vision"].body
    assert first is not None and first["output"][0]["type"] == "reasoning"
    stats = standin.stats()
    assert stats["files_uploaded"] == 1
    # The upload, the create, the polls and the downloads were each held to the OpenAI description.
    assert standin.recorder.exchanges >= 4 and standin.recorder.violations == []
    assert stats["batch_metadata"] == [{"job": "vision-1", "stage": "vision"}]


def test_direct_vision_call_through_the_sdk(standin: Standin) -> None:
    async def call(client: openai.AsyncOpenAI) -> Any:
        return await client.responses.create(**vision_request_body("Camry", URLS[:2], SETTINGS))

    result = run(call, standin)
    assert result.status == "completed" and result.output[0].type == "reasoning"
    assert result.output_text == description(2, "Camry")
    assert result.usage is not None and result.usage.total_tokens > 0


def test_direct_translation_parsed_by_the_model_code(standin: Standin) -> None:
    english = description(2, "Camry")
    body = translation_request_body(english, ["en", "de", "fr", "ru"], SETTINGS)
    result = run(lambda c: call_responses(c, body), standin)
    assert result["output"][0]["type"] == "message"  # gpt-4.1-mini does not reason
    translations = parse_translation_response(result, ["en", "de", "fr", "ru"], english)
    assert translations == {code: translation(code, english) for code in ("de", "fr", "ru")}
    # The English's blocks kept, the language's tag at the start of its first paragraph.
    assert translations["de"] == "<p>[de] " + english.removeprefix("<p>")
    assert standin.stats()["direct_calls"] == {"/v1/responses": 1}


def test_translation_into_region_and_script_variants(standin: Standin) -> None:
    english = "<p>Dented door.</p>"
    tags = ["pt-BR", "zh-Hant", "sr-Latn", "es-419", "fil"]
    result = run(lambda c: call_responses(c, translation_request_body(english, tags, SETTINGS)), standin)
    # Latin-script languages keep the letters; Traditional Chinese is written in Traditional forms.
    expected = {tag: f"<p>[{tag}] Dented door.</p>" for tag in tags}
    expected["zh-Hant"] = "<p>[zh-Hant] 邊長見氣長邊 邊進進門.</p>"
    assert parse_translation_response(result, tags, english) == expected


def test_chat_completions_follow_the_same_rules(standin: Standin) -> None:
    async def call(client: openai.AsyncOpenAI) -> Any:
        message: Any = {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": URLS[0]}}, {"type": "text", "text": "Civic"}]}
        return await client.chat.completions.create(model="gpt-4.1-mini", messages=[message])

    result = run(call, standin)
    assert result.choices[0].message.content == description(1, "Civic")


def test_nested_translation_schema_over_chat(standin: Standin) -> None:
    schema = {"type": "object", "additionalProperties": False, "required": ["translations"], "properties": {
        "translations": {"type": "object", "additionalProperties": False, "required": ["de", "pt-BR"],
                         "properties": {"de": {"type": "string"}, "pt-BR": {"type": "string"}}}}}

    async def call(client: openai.AsyncOpenAI) -> Any:
        return await client.chat.completions.create(
            model="gpt-4.1-mini", messages=[{"role": "user", "content": "<p>Dented door.</p>"}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "t", "strict": True, "schema": schema}})

    result = run(call, standin)
    assert json.loads(result.choices[0].message.content) == {
        "translations": {"de": "<p>[de] Dented door.</p>", "pt-BR": "<p>[pt-BR] Dented door.</p>"}}


# --- validation ----------------------------------------------------------------------------------


def _bad_files() -> dict[str, tuple[list[bytes], str, int]]:
    good = vision_lines(["a", "b"])
    line = json.loads(good[1])
    wrong_url = json.dumps(line | {"url": "/v1/chat/completions"}).encode() + b"\n"
    return {
        "duplicate": ([good[0], good[0]], "duplicate_custom_id", 2),
        "mixed models": ([good[0], batch_line("lot-7:vision", vision_request_body(
            "x", URLS, ModelSettings(vision_model="gpt-4.1")))], "mismatched_model", 2),
        "url mismatch": ([good[0], wrong_url], "invalid_url", 2),
        "not json": ([good[0], b"{nope\n"], "invalid_json_line", 2),
    }


@pytest.mark.parametrize("case", list(_bad_files()))
def test_invalid_input_files_fail_validation(standin: Standin, tmp_path: Path, case: str) -> None:
    lines, code, line_number = _bad_files()[case]
    path = write_lines(tmp_path / "bad.jsonl", lines)
    batch, seen, output, errors = run(lambda c: run_batch(c, path), standin)
    assert seen[-1] == "failed" and batch["failed_at"] and output == {} == errors
    assert batch["errors"]["object"] == "list"
    assert [(e["code"], e["line"]) for e in batch["errors"]["data"]] == [(code, line_number)]
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}


def test_a_malformed_request_fails_its_line_not_the_batch(standin: Standin, tmp_path: Path) -> None:
    body = vision_request_body("c", URLS[:1], SETTINGS)
    body["input"][0]["content"][0] = {"type": "input_image", "image_url": {"url": URLS[0]}, "detail": "low"}
    path = write_lines(tmp_path / "v.jsonl", [*vision_lines(["a"]), batch_line("lot-9:vision", body)])
    batch, seen, output, errors = run(lambda c: run_batch(c, path), standin)
    assert seen[-1] == "completed" and batch["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    assert set(output) == {"lot-0:vision"}
    assert errors["lot-9:vision"].body is None and errors["lot-9:vision"].error_code == "invalid_type"


def test_create_batch_rejects_bad_metadata(standin: Standin, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "v.jsonl", vision_lines(["a"]))

    async def create(client: openai.AsyncOpenAI) -> None:
        batches = OpenAIBatches(client)
        file_id = await batches.upload_batch_file(path)
        await batches.create_batch(file_id, {f"k{i}": "v" for i in range(17)})

    with pytest.raises(ModelRequestError) as info:
        run(create, standin)
    assert info.value.status_code == 400


def test_batch_uploads_must_be_jsonl(standin: Standin) -> None:
    async def upload(client: openai.AsyncOpenAI) -> Any:
        return await client.files.create(file=("lots.txt", io.BytesIO(b"{}\n")), purpose="batch")

    with pytest.raises(openai.BadRequestError):
        run(upload, standin)


# --- faults ---------------------------------------------------------------------------------------


def test_rate_limits_are_retried_after_retry_after(standin: Standin) -> None:
    standin.faults(rate_limit_next=1)
    started = time.monotonic()
    result = run(lambda c: call_responses(c, vision_request_body("Camry", URLS[:1], SETTINGS)), standin)
    assert time.monotonic() - started >= 1.0  # the stand-in says Retry-After: 1
    assert parse_vision_response(result) == description(1, "Camry")
    assert standin.stats()["direct_calls"] == {"/v1/responses": 2}


def test_persistent_rate_limits_and_server_errors_surface_as_model_errors(standin: Standin) -> None:
    body = vision_request_body("Camry", URLS[:1], SETTINGS)
    standin.faults(rate_limit_next=5)
    with pytest.raises(ModelRateLimitedError) as info:
        run(lambda c: call_responses(c, body, max_attempts=1), standin)
    assert info.value.retry_after_s == 1.0
    standin.faults(rate_limit_next=0, server_error_next=2)
    with pytest.raises(ModelUnavailableError):
        run(lambda c: call_responses(c, body, max_attempts=2), standin)


def test_malformed_direct_requests_get_openai_400s(standin: Standin) -> None:
    body = vision_request_body("Camry", URLS[:1], SETTINGS)
    del body["model"]
    with pytest.raises(ModelRequestError, match="model"):
        run(lambda c: call_responses(c, body), standin)
    bad_schema = translation_request_body("<p>x</p>", ["de"], SETTINGS)
    bad_schema["text"]["format"]["schema"]["additionalProperties"] = True
    with pytest.raises(ModelRequestError, match="additionalProperties"):
        run(lambda c: call_responses(c, bad_schema), standin)


def test_error_marker_and_fail_substring_go_to_the_error_file(standin: Standin, tmp_path: Path) -> None:
    standin.faults(fail_custom_ids_containing="lot-2")
    path = write_lines(tmp_path / "v.jsonl", vision_lines(["fine", "broken [standin:error]", "targeted"]))
    batch, seen, output, errors = run(lambda c: run_batch(c, path), standin)
    assert seen[-1] == "completed"
    assert batch["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
    assert set(output) == {"lot-0:vision"} and set(errors) == {"lot-1:vision", "lot-2:vision"}
    assert all(e.error_code == "server_error" and e.body is None for e in errors.values())


def test_incomplete_marker_gives_an_incomplete_response(standin: Standin, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "v.jsonl", vision_lines(["cut short [standin:incomplete]"]))
    _, _, output, _ = run(lambda c: run_batch(c, path), standin)
    body = output["lot-0:vision"].body
    assert body is not None and body["status"] == "incomplete"
    with pytest.raises(ModelOutputError, match="max_output_tokens"):
        parse_vision_response(body)


def test_expired_batch_keeps_the_first_half_and_reports_the_rest(standin: Standin, tmp_path: Path) -> None:
    standin.faults(batch_outcome="expired", batch_outcome_count=1)
    path = write_lines(tmp_path / "v.jsonl", vision_lines(["a", "b", "c", "d"]))
    batch, seen, output, errors = run(lambda c: run_batch(c, path), standin)
    assert seen[-1] == "expired" and batch["expired_at"]
    assert batch["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    assert set(output) == {"lot-0:vision", "lot-1:vision"}
    assert {cid: e.error_code for cid, e in errors.items()} == {"lot-2:vision": "batch_expired",
                                                                 "lot-3:vision": "batch_expired"}
    # The counted fault is used up: the next batch completes.
    assert run(lambda c: run_batch(c, path), standin)[1][-1] == "completed"


def test_injected_failure(standin: Standin, tmp_path: Path) -> None:
    standin.faults(batch_outcome="failed")
    path = write_lines(tmp_path / "v.jsonl", vision_lines(["a"]))
    batch, seen, _, _ = run(lambda c: run_batch(c, path), standin)
    assert seen[-1] == "failed" and batch["errors"]["data"][0]["code"] == "standin_injected_failure"


def test_cancel_before_finalizing_runs_nothing(standin: Standin, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "v.jsonl", vision_lines(["a", "b"]))

    async def cancel(client: openai.AsyncOpenAI) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        batches = OpenAIBatches(client)
        created = await batches.create_batch(await batches.upload_batch_file(path), {"job": "cancel-me"})
        cancelling = await batches.cancel_batch(created["id"])
        batch, seen = await wait_terminal(batches, created["id"], cancelling["status"])
        return cancelling, batch, seen

    cancelling, batch, seen = run(cancel, standin)
    assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"]
    assert seen[-1] == "cancelled" and batch["cancelled_at"]
    assert batch["output_file_id"] is None
    assert batch["request_counts"]["completed"] == 0


# --- listing and recovery ---------------------------------------------------------------------------


def test_find_batches_by_metadata_and_list_pagination(standin: Standin, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "v.jsonl", vision_lines(["a"]))

    async def scenario(client: openai.AsyncOpenAI) -> tuple[list[str], list[dict[str, Any]], list[str]]:
        batches = OpenAIBatches(client)
        file_id = await batches.upload_batch_file(path)
        created = [(await batches.create_batch(file_id, {"job": "find", "chunk": str(i)}))["id"]
                   for i in range(3)]
        found = await batches.find_batches({"job": "find", "chunk": "1"})
        listed = [b.id async for b in client.batches.list(limit=1)][:3]
        return created, found, listed

    created, found, listed = run(scenario, standin)
    assert [b["id"] for b in found] == [created[1]]
    assert listed == created[::-1]  # newest first, one page at a time


# --- the strict server: API key and enqueued-token limit ------------------------------------------------


def test_api_key_is_required_when_configured(strict_standin: Standin) -> None:
    response = httpx2.get(f"{strict_standin.base_url}/batches")
    assert response.status_code == 401 and response.json()["error"]["type"] == "invalid_request_error"
    wrong = httpx2.get(f"{strict_standin.base_url}/batches",
                      headers={"Authorization": "Bearer sk-wrong-key-123"})
    assert wrong.json()["error"]["code"] == "invalid_api_key"


def test_enqueued_token_limit_fails_new_batches(strict_standin: Standin, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "v.jsonl", vision_lines(["a"]))
    batch, seen, _, _ = run(lambda c: run_batch(c, path), strict_standin)
    assert seen[-1] == "failed"
    assert batch["errors"]["data"][0]["code"] == "token_limit_exceeded"
    assert "Enqueued token limit reached for o4-mini" in batch["errors"]["data"][0]["message"]
