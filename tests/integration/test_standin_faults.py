"""Injected faults on every endpoint, each answered in the shape OpenAI sends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.standin import Standin, serve_standin

MESSAGE = {"model": "gpt-4.1-mini", "input": "Camry"}


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    with serve_standin(tmp_path_factory.mktemp("faults")) as running:
        yield running


@pytest.fixture()
def api(standin: Standin) -> Iterator[httpx2.Client]:
    standin.control.post("/_standin/reset").raise_for_status()
    with httpx2.Client(base_url=standin.base_url, timeout=10) as client:
        yield client


def _upload(api: httpx2.Client) -> httpx2.Response:
    return api.post("/files", files={"file": ("in.jsonl", b"{}\n")}, data={"purpose": "batch"})


def test_429s_carry_a_varying_retry_after(standin: Standin, api: httpx2.Client) -> None:
    standin.faults(rate_limit_next=3, retry_after_s=[1, 3, 0.5])
    answers = [api.post("/responses", json=MESSAGE) for _ in range(4)]
    assert [a.status_code for a in answers] == [429, 429, 429, 200]
    assert [a.headers["retry-after"] for a in answers[:3]] == ["1", "3", "1"]
    assert [a.headers["retry-after-ms"] for a in answers[:3]] == ["1000", "3000", "500"]
    assert {a.json()["error"]["code"] for a in answers[:3]} == {"rate_limit_exceeded"}


@pytest.mark.parametrize(("scope", "kind", "status", "error_type", "code"), [
    ("files", "rate_limit", 429, "requests", "rate_limit_exceeded"),
    ("files", "server_error", 500, "server_error", None),
    ("batches", "overloaded", 503, "server_error", None),
    ("batches", "invalid_api_key", 401, "invalid_request_error", "invalid_api_key"),
    ("responses", "insufficient_quota", 429, "insufficient_quota", "insufficient_quota"),
    ("any", "server_error", 500, "server_error", None),
])
def test_a_fault_answers_its_scope_then_clears(standin: Standin, api: httpx2.Client, scope: str, kind: str,
                                               status: int, error_type: str, code: str | None) -> None:
    standin.faults(api_faults=[{"scope": scope, "kind": kind, "count": 2}])
    calls = {"files": lambda: _upload(api), "batches": lambda: api.get("/batches"),
             "responses": lambda: api.post("/responses", json=MESSAGE), "any": lambda: api.get("/batches")}
    if scope != "any":
        other = "batches" if scope != "batches" else "files"
        assert calls[other]().status_code == 200  # another endpoint is untouched
    failed = [calls[scope]() for _ in range(2)]
    assert [f.status_code for f in failed] == [status, status]
    error = failed[0].json()["error"]
    assert (error["type"], error["code"]) == (error_type, code) and error["message"]
    assert ("retry-after" in failed[0].headers) == (kind == "rate_limit")
    assert calls[scope]().status_code == 200
    assert standin.control.get("/_standin/faults").json()["api_faults"] == []


def test_a_timeout_holds_the_request_past_the_clients_patience(standin: Standin, tmp_path: Path) -> None:
    standin.faults(api_faults=[{"scope": "batches", "kind": "timeout", "count": 1, "seconds": 2}])
    with (httpx2.Client(base_url=standin.base_url, timeout=0.3) as impatient,
          pytest.raises(httpx2.ReadTimeout)):
        impatient.get("/batches")
    with httpx2.Client(base_url=standin.base_url, timeout=10) as patient:
        assert patient.get("/batches").status_code == 200


def test_bad_fault_requests_are_refused(standin: Standin) -> None:
    response = standin.control.post("/_standin/faults", json={"api_faults": [{"scope": "moon", "kind": "x"}]})
    assert response.status_code == 400 and response.json()["error"]["message"].startswith("Invalid faults")
