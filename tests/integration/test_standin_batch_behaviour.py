"""Batches behave like OpenAI's: shuffled output, progressing counts, partial output on expiry and cancel."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from lotlens_common.model.batch_files import batch_line
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.vision import vision_request_body
from lotlens_openai_standin import answer_rules, batch_input, batches
from lotlens_openai_standin.batch_run import run_slice
from lotlens_openai_standin.image_costs import image_details
from tests.polling import wait_for
from tests.standin import Standin, serve_standin

TERMINAL = ("completed", "failed", "expired", "cancelled")


@contextmanager
def _api(tmp_path: Path, **overrides: Any) -> Iterator[tuple[Standin, httpx2.Client]]:
    with serve_standin(tmp_path, **overrides) as standin, httpx2.Client(base_url=standin.base_url,
                                                                         timeout=10) as api:
        yield standin, api


def _create(api: httpx2.Client, lines: int) -> dict[str, Any]:
    content = b"".join(batch_line(f"lot-{i}:vision", vision_request_body(
        f"note {i}", ["https://img.example/1.jpg"], ModelSettings())) for i in range(lines))
    upload = api.post("/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    file_id = upload.json()["id"]
    response = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/responses",
                                          "completion_window": "24h"})
    response.raise_for_status()
    return dict(response.json())


def _poll(api: httpx2.Client, batch_id: str, until: tuple[str, ...] = TERMINAL) -> list[dict[str, Any]]:
    """Every view of the batch read until its status is one of `until`."""
    seen: list[dict[str, Any]] = []

    def reached() -> bool:
        seen.append(api.get(f"/batches/{batch_id}").json())
        return seen[-1]["status"] in until

    wait_for(reached, lambda: f"batch {batch_id} to reach {until} (stuck in {seen[-1]['status']})",
             timeout_s=60, every_s=0.02)
    return seen


def _lines(api: httpx2.Client, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in api.get(f"/files/{file_id}/content").text.splitlines()]


def test_output_comes_in_another_order_than_the_input(tmp_path: Path) -> None:
    with _api(tmp_path, in_progress_seconds=0.0) as (_, api):
        done = _poll(api, _create(api, 30)["id"])[-1]
        ids = [line["custom_id"] for line in _lines(api, done["output_file_id"])]
    assert sorted(ids) == sorted(f"lot-{i}:vision" for i in range(30))
    assert ids != [f"lot-{i}:vision" for i in range(30)]


def test_request_counts_progress_while_in_progress(tmp_path: Path) -> None:
    with _api(tmp_path, in_progress_seconds=2.0) as (_, api):
        seen = _poll(api, _create(api, 20)["id"])
    running = [b["request_counts"]["completed"] for b in seen if b["status"] == "in_progress"]
    assert running == sorted(running)  # never goes back
    assert any(0 < done < 20 for done in running), running
    assert seen[-1]["request_counts"] == {"total": 20, "completed": 20, "failed": 0}


def test_a_batch_past_its_window_expires_with_its_finished_requests(tmp_path: Path) -> None:
    with _api(tmp_path, in_progress_seconds=4.0, completion_window_seconds=1.5) as (_, api):
        created = _create(api, 20)
        done = _poll(api, created["id"])[-1]
        output, errors = _lines(api, done["output_file_id"]), _lines(api, done["error_file_id"])
    assert done["status"] == "expired" and done["expired_at"]
    assert created["created_at"] <= created["expires_at"] <= created["created_at"] + 2
    counts = done["request_counts"]
    assert 0 < counts["completed"] < 20 and counts["completed"] + counts["failed"] == 20
    assert len(output) == counts["completed"]
    assert all(line["response"]["status_code"] == 200 for line in output)
    assert len(errors) == counts["failed"] and {line["error"]["code"] for line in errors} == {"batch_expired"}
    assert {line["custom_id"] for line in output + errors} == {f"lot-{i}:vision" for i in range(20)}


def test_cancel_while_in_progress_keeps_the_finished_requests(tmp_path: Path) -> None:
    with _api(tmp_path, in_progress_seconds=3.0, finalizing_seconds=0.3) as (_, api):
        batch_id = _create(api, 20)["id"]
        _poll(api, batch_id, ("in_progress",))
        wait_for(lambda: api.get(f"/batches/{batch_id}").json()["request_counts"]["completed"],
                 "a first request finished", timeout_s=60, every_s=0.02)
        cancelling = api.post(f"/batches/{batch_id}/cancel").json()
        seen = _poll(api, batch_id)
        done = seen[-1]
        output, errors = _lines(api, done["output_file_id"]), _lines(api, done["error_file_id"])
    assert cancelling["status"] == "cancelling" and done["status"] == "cancelled"
    assert seen[0]["status"] in ("cancelling", "cancelled")
    finished = done["request_counts"]["completed"]
    assert 0 < finished < 20 and len(output) == finished
    assert len(errors) == 20 - finished and {line["error"]["code"] for line in errors} == {"batch_cancelled"}


def test_a_file_of_several_read_chunks_comes_back_byte_for_byte(tmp_path: Path) -> None:
    # 2.5 MiB of every byte value: the content is streamed 1 MiB at a time.
    content = bytes(range(256)) * (10 * 1024) + b"tail"
    with _api(tmp_path) as (_, api):
        upload = api.post("/files", files={"file": ("in.jsonl", content)}, data={"purpose": "user_data"})
        upload.raise_for_status()
        assert upload.json()["bytes"] == len(content)
        assert api.get(f"/files/{upload.json()['id']}/content").content == content


@pytest.mark.parametrize(("faults", "status"), [({}, "completed"), ({"batch_outcome": "failed"}, "failed"),
                                                ({"batch_outcome": "expired"}, "expired")])
def test_a_finished_batch_refuses_a_cancel_with_openais_409(tmp_path: Path, faults: dict[str, str],
                                                            status: str) -> None:
    # It answered 400 `invalid_batch_status`; OpenAI answers 409 with no code (as observed).
    with _api(tmp_path, completion_window_seconds=0.5 if status == "expired" else 86400.0,
              in_progress_seconds=1.0) as (standin, api):
        standin.faults(**faults)
        batch_id = _create(api, 2)["id"]
        assert _poll(api, batch_id)[-1]["status"] == status
        refused = api.post(f"/batches/{batch_id}/cancel")
        assert api.get(f"/batches/{batch_id}").json()["status"] == status
    assert refused.status_code == 409
    assert refused.json() == {"error": {"message": f"Cannot cancel a batch with status '{status}'.",
                                        "type": "invalid_request_error", "param": None, "code": None}}


def test_the_stuck_finalizing_fault_keeps_a_batch_finalizing_and_refuses_its_cancels(tmp_path: Path) -> None:
    # OpenAI has had batches stuck in `finalizing` for good; the fault plays one for the next batch.
    with _api(tmp_path, finalizing_seconds=0.1) as (standin, api):
        standin.faults(batch_outcome="stuck_finalizing", batch_outcome_count=1)
        stuck = _create(api, 2)["id"]
        _poll(api, stuck, ("finalizing", *TERMINAL))
        time.sleep(0.5)  # five finalizing phases
        refused = api.post(f"/batches/{stuck}/cancel")
        seen = api.get(f"/batches/{stuck}").json()
        assert _poll(api, _create(api, 1)["id"])[-1]["status"] == "completed"  # the fault is used up
    assert seen["status"] == "finalizing" and seen["output_file_id"] is None
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == "Cannot cancel a batch with status 'finalizing'."


@pytest.mark.parametrize("phase", ["validating", "in_progress"])
def test_a_batch_whose_input_file_is_deleted_while_it_runs_fails_with_errors(tmp_path: Path,
                                                                            phase: str) -> None:
    # Each phase looked the file up: the lookup's 404 killed the batch's task ("Task exception was
    # never retrieved") and the batch stayed `validating` or `in_progress` for good.
    with _api(tmp_path, validating_seconds=0.5, in_progress_seconds=2.0) as (_, api):
        created = _create(api, 20)
        _poll(api, created["id"], (phase, *TERMINAL))
        assert api.delete(f"/files/{created['input_file_id']}").json()["deleted"] is True
        done = _poll(api, created["id"])[-1]
    assert done["status"] == "failed" and done["failed_at"]
    assert done["output_file_id"] is None and done["error_file_id"] is None
    [error] = done["errors"]["data"]
    assert done["errors"]["object"] == "list" and error["code"] == "file_not_found"
    assert created["input_file_id"] in error["message"]
    assert (error["param"], error["line"]) == (None, None)


def test_each_request_is_read_for_its_answer_once_validation_included(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Validation needs a line's image count alone (its token estimate); reading the whole prompt
    # there too made every line's prompt twice, a tenth of the stand-in's CPU in a 50,000-lot job.
    built: list[int] = []

    class CountedPrompt(answer_rules.Prompt):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self.image_count)

    monkeypatch.setattr(answer_rules, "Prompt", CountedPrompt)
    with _api(tmp_path, in_progress_seconds=0.0) as (_, api):
        done = _poll(api, _create(api, 12)["id"])[-1]
        output = _lines(api, done["output_file_id"])
    assert done["status"] == "completed" and len(output) == 12
    assert built == [1] * 12, f"{len(built)} prompts read for 12 requests"


@pytest.mark.parametrize("limit", [0, 10**9])
def test_a_batchs_tokens_are_estimated_only_under_an_enqueued_token_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    # Nothing reads a batch's estimate without a limit; validation still encoded every body again
    # and walked its images for it: 2 us of a vision line's 6.
    walked: list[object] = []

    def counted(body: Any, chat: bool) -> list[str]:
        walked.append(body)
        return image_details(body, chat)

    monkeypatch.setattr(batch_input, "image_details", counted)
    with _api(tmp_path, in_progress_seconds=0.0, enqueued_token_limit=limit) as (_, api):
        done = _poll(api, _create(api, 12)["id"])[-1]
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 12
    assert len(walked) == (12 if limit else 0), f"{len(walked)} bodies walked for an estimate"


def test_a_finalizing_batch_refuses_a_cancel_with_openais_409_and_completes(tmp_path: Path) -> None:
    # The stand-in accepted it, where OpenAI answers 409 (README's errors table, `CANNOT_CANCEL`).
    with _api(tmp_path, in_progress_seconds=0.1, finalizing_seconds=3.0) as (_, api):
        batch_id = _create(api, 2)["id"]
        _poll(api, batch_id, ("finalizing", *TERMINAL))
        refused = api.post(f"/batches/{batch_id}/cancel")
        done = _poll(api, batch_id)[-1]
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == "Cannot cancel a batch with status 'finalizing'."
    assert done["status"] == "completed" and done["cancelling_at"] is None


def test_a_cancel_during_the_last_requests_goes_straight_to_cancelled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A cancel landing while the last slice of requests ran moved the batch to `cancelling`; the
    # slice's end moved it back to `finalizing`, then to `cancelling` again (a second stamp).
    slice_ran, cancel_sent = threading.Event(), threading.Event()

    def last_slice(*args: Any) -> dict[str, Any]:
        answered = run_slice(*args)
        slice_ran.set()
        cancel_sent.wait(10)
        return answered

    monkeypatch.setattr(batches, "run_slice", last_slice)
    with _api(tmp_path, in_progress_seconds=0.0, finalizing_seconds=0.2) as (_, api):
        batch_id = _create(api, 2)["id"]
        assert slice_ran.wait(10)
        cancelling = api.post(f"/batches/{batch_id}/cancel").json()
        seen = [api.get(f"/batches/{batch_id}").json()]
        cancel_sent.set()
        seen += _poll(api, batch_id)
    assert cancelling["status"] == "cancelling"
    assert {batch["status"] for batch in seen} <= {"cancelling", "cancelled"}
    assert seen[-1]["status"] == "cancelled" and seen[-1]["finalizing_at"] is None


def test_a_create_with_a_parameter_the_description_does_not_have_is_refused(tmp_path: Path) -> None:
    # Responses and Chat refused unknown parameters; a batch create took any (a misspelt field passed).
    with _api(tmp_path) as (_, api):
        upload = api.post("/files", files={"file": ("in.jsonl", b"")}, data={"purpose": "batch"})
        refused = api.post("/batches", json={"input_file_id": upload.json()["id"],
                                             "endpoint": "/v1/responses", "completion_window": "24h",
                                             "metadatas": {"a": "b"}})
    assert refused.status_code == 400
    assert refused.json()["error"] == {"message": "Unknown parameter: 'metadatas'.",
                                       "type": "invalid_request_error", "param": "metadatas",
                                       "code": "unknown_parameter"}


def test_files_batches_and_direct_calls_get_ids_of_openais_form(tmp_path: Path) -> None:
    # The forms `ids.py` takes from OpenAI's examples: a file's id was 24 hex digits.
    with _api(tmp_path) as (standin, api):
        standin.faults(fail_custom_ids_containing="lot-1")  # an error file too
        done = _poll(api, _create(api, 2)["id"])[-1]
        direct = api.post("/responses", json=vision_request_body("Camry", ["https://img.example/1.jpg"],
                                                                 ModelSettings()))
    assert re.fullmatch(r"batch_[0-9a-f]{32}", done["id"]), done["id"]
    for file_id in (done["input_file_id"], done["output_file_id"], done["error_file_id"]):
        assert re.fullmatch(r"file-[0-9A-Za-z]{22}", file_id), file_id
    assert re.fullmatch(r"req_[0-9a-f]{32}", direct.headers["x-request-id"])
