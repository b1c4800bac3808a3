"""`lotlens` exit statuses: 0 done; 1 refused, failed, or a file that could not be written; 2 bad
usage, found before any request; 130 Ctrl-C, naming what goes on at the service."""

from __future__ import annotations

import errno
import io
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx2
import pytest

from lotlens_client import LotLensClient, cli
from tests.unit.client_support import (
    JOB_ID,
    KEY,
    SUBMIT,
    FakeApi,
    accepted_body,
    lot_body,
    lots,
    results_body,
    status_body,
)

STATUS = f"GET /api/v1/batch-status/{JOB_ID}"
RESULTS = f"GET /api/v1/batch-results/{JOB_ID}"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The key in the environment, no URL (the default applies); the client's sleeps recorded."""
    monkeypatch.setenv(cli.KEY_ENV, KEY)
    monkeypatch.delenv(cli.URL_ENV, raising=False)
    slept: list[float] = []
    monkeypatch.setattr(cli, "LotLensClient", partial(LotLensClient, sleep=slept.append))
    return slept


def run(api: FakeApi, *argv: str) -> int:
    return cli.main(list(argv), transport=api.transport())


def lots_file(tmp_path: Path, count: int = 2) -> str:
    path = tmp_path / "lots.json"
    path.write_text(json.dumps(lots(count)), encoding="utf-8")
    return str(path)


def ended(status: str) -> FakeApi:
    """A job accepted, then found `status` by its first poll."""
    results = {**results_body(), "status": status, "error_message": f"the job was {status}"}
    return (FakeApi().on(f"POST {SUBMIT}", httpx2.Response(201, json=accepted_body()))
            .on(STATUS, httpx2.Response(200, json={**status_body(status, 100.0), "error_message": "why"}))
            .on(RESULTS, httpx2.Response(200, json=results)))


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_submit_wait_of_a_job_that_did_not_complete_prints_it_and_exits_1(
        status: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # It exited 0, as for a completed job: a script saw success.
    assert run(ended(status), "submit", lots_file(tmp_path), "--wait") == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == status
    assert captured.err.endswith(f"lotlens: job {JOB_ID} ended {status}: why\n")


def test_a_single_lot_described_as_failed_is_printed_and_exits_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    failed = {**lot_body("lot-1"), "status": "failed", "descriptions": [], "error_message": "no usable image"}
    answer = {"version": "1.0.0", "processing_mode": "synchronous", "total_lots": 1, "lots": [failed]}
    api = FakeApi().on(f"POST {SUBMIT}", httpx2.Response(200, json=answer))
    assert run(api, "submit", lots_file(tmp_path, 1)) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "failed"
    sent_with = api.received[-1].headers["idempotency-key"]
    assert captured.err == (f"lotlens: if the answer is lost, {cli.resend_hint(sent_with)}\n"
                            "lotlens: lot lot-1 ended failed: no usable image\n")


def test_an_answer_that_stdout_cannot_take_is_a_failure_not_bad_usage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Any ValueError was "bad usage, nothing sent" (exit 2), a closed stream's too, after the lot
    # had been described and paid for.
    answer = {"version": "1.0.0", "processing_mode": "synchronous", "total_lots": 1, "lots": [lot_body()]}
    api = FakeApi().on(f"POST {SUBMIT}", httpx2.Response(200, json=answer))
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)
    assert run(api, "submit", lots_file(tmp_path, 1)) == 1
    err = capsys.readouterr().err
    assert "the request was carried out, but its answer could not be printed" in err
    assert f"--idempotency-key {api.received[-1].headers['idempotency-key']}:" in err


@pytest.mark.parametrize("argv", [
    ["submit", "FILE", "--wait", "--poll-interval", "-1"], ["submit", "FILE", "--wait-timeout", "nan"],
    ["--timeout", "0", "status", JOB_ID], ["--url", "127.0.0.1:18000", "status", JOB_ID],
    ["--url", "lotlens.example.com", "status", JOB_ID],
    ["--url", "ftp://lotlens.example.com", "status", JOB_ID],
    ["submit", "FILE", "--idempotency-key", "заказ-1"],
])
def test_bad_arguments_exit_2_before_any_request(argv: list[str], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # `--poll-interval -1` submitted the job, then exited 2 "bad usage" with the job made; a URL
    # without a scheme was a NETWORK_ERROR (exit 1).
    api = FakeApi().on(f"POST {SUBMIT}", httpx2.Response(201, json=accepted_body()))
    assert run(api, *[lots_file(tmp_path) if arg == "FILE" else arg for arg in argv]) == 2
    assert api.received == [] and "lotlens" in capsys.readouterr().err


def test_a_url_without_a_scheme_from_the_environment_is_bad_usage(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(cli.URL_ENV, "127.0.0.1:18000")
    assert run(FakeApi(), "status", JOB_ID) == 2
    assert "http(s)://HOST" in capsys.readouterr().err


class FullDisk:
    """A file on a full disk."""

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *_exc: Any) -> None:
        return None

    def write(self, _chunk: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_download_onto_a_full_disk_exits_1_with_the_systems_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Reported as exit 2, bad usage, though the command was right.
    document = json.dumps(results_body()).encode()
    api = FakeApi().on(f"{RESULTS}/download", httpx2.Response(200, content=document))
    monkeypatch.setattr(Path, "open", lambda *_args, **_kwargs: FullDisk())
    assert run(api, "results", JOB_ID, "--download", str(tmp_path / "out.json")) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def interrupt(_request: httpx2.Request) -> httpx2.Response:
    raise KeyboardInterrupt


def test_ctrl_c_during_a_wait_names_the_job_that_goes_on_and_exits_130(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A traceback before.
    api = (FakeApi().on(f"POST {SUBMIT}", httpx2.Response(201, json=accepted_body()))
           .on(STATUS, httpx2.Response(200, json=status_body("processing")), interrupt))
    assert run(api, "submit", lots_file(tmp_path), "--wait", "--poll-interval", "0") == 130
    err = capsys.readouterr().err
    assert err.endswith(f"\nlotlens: job {JOB_ID} continues; `lotlens status {JOB_ID}`\n")
    assert "Traceback" not in err


def test_ctrl_c_before_a_submissions_answer_names_the_key_to_send_it_again_with(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi().on(f"POST {SUBMIT}", interrupt)
    assert run(api, "submit", lots_file(tmp_path)) == 130
    key = api.received[0].headers["Idempotency-Key"]
    assert f"--idempotency-key {key}" in capsys.readouterr().err


def test_a_submission_with_no_answer_names_the_key_it_was_sent_with(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], environment: list[float]) -> None:
    # The key the SDK had made up was never told: resending meant a second job.
    def no_answer(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)
    api = FakeApi().on(f"POST {SUBMIT}", no_answer)
    assert cli.main(["submit", lots_file(tmp_path)], transport=api.transport()) == 1
    keys = {request.headers["Idempotency-Key"] for request in api.received}
    assert len(keys) == 1 and len(api.received) == 4  # sent again three times under the one key
    assert environment == [1.0, 2.0, 4.0]
    (key,) = keys
    err = capsys.readouterr().err
    assert f'"idempotency_key": "{key}"' in err and f"send it again with --idempotency-key {key}" in err
    # It promised "(never carried out twice)": the gateway keeps a key 24 h, and takes over the key
    # of an attempt that died with its gateway after about 6 minutes, carrying it out anew.
    assert "never carried out twice" not in err
    assert "within 24 h" in err and "about 6 minutes" in err


def test_ctrl_c_before_a_submissions_answer_promises_only_what_the_gateway_keeps(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi().on(f"POST {SUBMIT}", interrupt)
    assert run(api, "submit", lots_file(tmp_path, 1)) == 130
    err = capsys.readouterr().err
    assert "never carried out twice" not in err and "within 24 h" in err


def dropped(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ConnectError("connection refused", request=request)


def test_a_wait_whose_polls_fail_says_so_once_and_again_when_they_are_answered(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Nothing was said: a gateway gone for good froze the bar for up to --wait-timeout (24 h).
    processing = httpx2.Response(200, json=status_body("processing"))
    api = ended("completed").on(STATUS, processing, dropped, dropped, dropped, processing,
                                httpx2.Response(200, json=status_body("completed", 100.0)))
    assert run(api, "submit", lots_file(tmp_path), "--wait", "--poll-interval", "0") == 0
    err = capsys.readouterr().err
    assert err.count("status polls are failing") == 1 and "ConnectError: connection refused" in err
    assert err.count(f"status polls of job {JOB_ID} are answered again") == 1


def test_a_wait_that_times_out_is_reported_as_an_api_error_naming_the_job_that_goes_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # "lotlens: - WAIT_TIMEOUT: …" without the job to follow: WaitTimeoutError is an OSError and
    # took the file-error branch.
    api = ended("processing")
    assert run(api, "submit", lots_file(tmp_path), "--wait", "--wait-timeout", "0") == 1
    err = capsys.readouterr().err
    assert f"lotlens: error WAIT_TIMEOUT: Job {JOB_ID} is still processing" in err
    assert err.endswith(f"lotlens: job {JOB_ID} continues; `lotlens status {JOB_ID}`\n")
