"""Input the stand-in cannot take, and defects in it, answered as the real API would: a 400 in
OpenAI's error format, a failed batch; never a plain-text 500, a batch running for ever, or a
crash the OpenAPI check does not see."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import pytest

from lotlens_common.model.batch_files import batch_line
from lotlens_openai_standin import batches
from tests.standin import batch_reaching, serve_standin

# A strict schema whose `properties` is a list: OpenAI refuses it with a 400.
MALFORMED = {"model": "gpt-4.1-mini", "input": "Camry",
             "text": {"format": {"type": "json_schema", "name": "lot", "strict": True,
                                 "schema": {"type": "object", "additionalProperties": False,
                                            "properties": ["title"], "required": ["title"]}}}}
WELL_FORMED = {"model": "gpt-4.1-mini", "input": "Camry"}
FINISHED = ("completed", "failed", "expired", "cancelled")


def _run_batch(api: httpx2.Client, bodies: dict[str, dict[str, Any]]) -> dict[str, Any]:
    content = b"".join(batch_line(custom_id, body) for custom_id, body in bodies.items())
    upload = api.post("/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    file_id = upload.json()["id"]
    created = api.post("/batches", json={"input_file_id": file_id, "endpoint": "/v1/responses",
                                         "completion_window": "24h"})
    created.raise_for_status()
    return batch_reaching(api, created.json()["id"], FINISHED)


def _lines(api: httpx2.Client, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    lines = (json.loads(line) for line in api.get(f"/files/{file_id}/content").text.splitlines())
    return {line["custom_id"]: line for line in lines}


def test_a_strict_schema_whose_properties_are_a_list_is_refused_with_a_400(tmp_path: Path) -> None:
    with serve_standin(tmp_path) as standin, httpx2.Client(base_url=standin.base_url, timeout=10) as api:
        answer = api.post("/responses", json=MALFORMED)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "invalid_json_schema"
        assert answer.json()["error"]["param"] == "text.format.schema"


def test_a_batch_line_with_that_schema_gets_a_400_line_and_the_batch_completes(tmp_path: Path) -> None:
    with serve_standin(tmp_path) as standin, httpx2.Client(base_url=standin.base_url, timeout=10) as api:
        batch = _run_batch(api, {"bad": MALFORMED, "good": WELL_FORMED})
        assert batch["status"] == "completed"
        errors, outputs = _lines(api, batch["error_file_id"]), _lines(api, batch["output_file_id"])
    assert errors["bad"]["response"]["status_code"] == 400
    assert errors["bad"]["response"]["body"]["error"]["code"] == "invalid_json_schema"
    assert list(outputs) == ["good"]


class Defect(RuntimeError):
    """A bug in the stand-in, raised where it runs a batch's requests."""


def test_a_defect_while_a_batch_runs_fails_it_with_errors_and_a_cancel_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise Defect("a defect in the stand-in")

    monkeypatch.setattr(batches, "run_slice", broken)
    with serve_standin(tmp_path) as standin, httpx2.Client(base_url=standin.base_url, timeout=10) as api:
        batch = _run_batch(api, {"good": WELL_FORMED})
        cancel = api.post(f"/batches/{batch['id']}/cancel")
    assert batch["status"] == "failed"
    assert batch["errors"]["data"][0]["code"] == "server_error"
    assert cancel.status_code == 409  # finished: not `cancelling` for ever


def test_a_stand_in_crash_on_a_request_is_a_violation_of_the_description(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise Defect("a defect in the stand-in")

    monkeypatch.setattr(batches.BatchService, "page", broken)
    # The violation fails the test on the way out of serve_standin: expected here.
    with (pytest.raises(AssertionError, match="breaks the OpenAI description") as failed,
          serve_standin(tmp_path) as standin,
          httpx2.Client(base_url=standin.base_url, timeout=10) as api):
        assert api.get("/batches").status_code == 500
        exchanges = standin.recorder.exchanges
    assert exchanges == 1
    assert "GET /v1/batches → 500" in str(failed.value)
