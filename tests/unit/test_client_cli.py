"""`lotlens` on a fake API: arguments, input files, JSON on stdout, messages and exit statuses."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest

from lotlens_client import cli
from lotlens_client.client import LotLensClient
from tests.unit.client_support import (
    JOB_ID,
    KEY,
    SUBMIT,
    FakeApi,
    accepted_body,
    error,
    lot_body,
    lots,
    not_completed_body,
    results_body,
    status_body,
)

STATUS = f"GET /api/v1/batch-status/{JOB_ID}"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key in the environment, no URL (the default applies)."""
    monkeypatch.setenv(cli.KEY_ENV, KEY)
    monkeypatch.delenv(cli.URL_ENV, raising=False)


def run(api: FakeApi, *argv: str) -> int:
    return cli.main(list(argv), transport=api.transport())


def output(capsys: pytest.CaptureFixture[str]) -> tuple[Any, str]:
    captured = capsys.readouterr()
    return (json.loads(captured.out) if captured.out else None), captured.err


def write(tmp_path: Path, document: Any) -> str:
    path = tmp_path / "lots.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


def seed_cars(count: int) -> list[dict[str, Any]]:
    """Lots the way the v2.0 client's `cars_data` writes them."""
    return [{"lot_id": f"car-{i}", "additional_info": "BMW X5", "image_urls": [f"https://img.example.com/{i}.jpg"]}
            for i in range(count)]


def test_submitting_a_seed_style_list_creates_a_batch_job(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi().on(f"POST {SUBMIT}", httpx2.Response(201, json=accepted_body()))
    status = run(api, "submit", write(tmp_path, seed_cars(2)), "--languages", "en, de",
                 "--webhook", "https://hooks.example.com/done", "--idempotency-key", "k-1")
    printed, _ = output(capsys)
    assert status == 0 and printed["job_id"] == JOB_ID and printed["created_at"] == "2025-08-05T07:30:00Z"
    sent = api.body()
    assert sent["languages"] == ["en", "de"]
    expected_images = [[{"url": f"https://img.example.com/{i}.jpg"}] for i in (0, 1)]
    assert [lot["images"] for lot in sent["lots"]] == expected_images
    assert {lot["webhook"] for lot in sent["lots"]} == {"https://hooks.example.com/done"}
    assert api.received[-1].headers["Idempotency-Key"] == "k-1"
    assert str(api.received[-1].url).startswith(cli.DEFAULT_URL)


def test_a_file_with_one_lot_is_described_at_once_in_the_files_languages(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    answer = {"version": "1.0.0", "processing_mode": "synchronous", "total_lots": 1,
              "processed_at": "2025-08-05T08:30:15Z", "lots": [lot_body("lot-1", ("en", "ru"))]}
    api = FakeApi().on(f"POST {SUBMIT}", httpx2.Response(200, json=answer))
    status = run(api, "submit", write(tmp_path, {"languages": ["en", "ru"], "lots": lots(1)}))
    printed, _ = output(capsys)
    assert status == 0 and printed["lot_id"] == "lot-1"
    assert [d["language"] for d in printed["descriptions"]] == ["en", "ru"]
    assert api.body()["languages"] == ["en", "ru"]


def test_submit_and_wait_draws_a_progress_bar_and_prints_the_results(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = (FakeApi()
           .on(f"POST {SUBMIT}", httpx2.Response(201, json=accepted_body()))
           .on(STATUS, httpx2.Response(200, json=status_body("processing", 50.0)),
               httpx2.Response(200, json=status_body("completed", 100.0)))
           .on(f"GET /api/v1/batch-results/{JOB_ID}", httpx2.Response(200, json=results_body())))
    status = run(api, "submit", write(tmp_path, {"lots": lots(2)}), "--wait", "--poll-interval", "0")
    printed, err = output(capsys)
    assert status == 0 and printed["status"] == "completed" and len(printed["lots"]) == 2
    assert "\r[###############...............]  50.0% 1/2 lots" in err
    assert "\r[##############################] 100.0% 2/2 lots, 0 failed  completed" in err
    assert err.endswith("\n")


def test_the_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(cli.URL_ENV, "https://lotlens.example.com/base/")
    api = FakeApi().on(f"GET /base/api/v1/batch-status/{JOB_ID}", httpx2.Response(200, json=status_body()))
    assert run(api, "status", JOB_ID) == 0
    assert str(api.received[-1].url) == f"https://lotlens.example.com/base/api/v1/batch-status/{JOB_ID}"
    printed, _ = output(capsys)
    assert printed["progress"]["completion_percentage"] == 50.0


def test_an_api_error_exits_1_with_the_message_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi().on(STATUS, error(404, "JOB_NOT_FOUND", f"Job {JOB_ID} not found", {"job_id": JOB_ID}))
    assert run(api, "status", JOB_ID) == 1
    printed, err = output(capsys)
    assert printed is None
    assert err.startswith(f"lotlens: 404 JOB_NOT_FOUND: Job {JOB_ID} not found") and '"job_id"' in err


def test_results_of_a_running_job_exit_1_naming_its_status(capsys: pytest.CaptureFixture[str]) -> None:
    api = (FakeApi().on(f"GET /api/v1/batch-results/{JOB_ID}",
                        httpx2.Response(202, json=not_completed_body()))
           .on(STATUS, httpx2.Response(200, json=status_body("translating", 80.0))))
    assert run(api, "results", JOB_ID) == 1
    _, err = output(capsys)
    assert "JOB_NOT_COMPLETED" in err and "still translating (80.0%)" in err


def test_results_can_be_downloaded_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = json.dumps(results_body()).encode()
    api = FakeApi().on(f"GET /api/v1/batch-results/{JOB_ID}/download", httpx2.Response(200, content=document))
    target = tmp_path / "results.json"
    assert run(api, "results", JOB_ID, "--download", str(target)) == 0
    printed, _ = output(capsys)
    assert printed == {"job_id": JOB_ID, "downloaded_to": str(target)}
    assert target.read_bytes() == document


@pytest.mark.parametrize("where", ["missing-folder/results.json", "."])
def test_a_download_to_a_place_that_cannot_be_written_is_a_usage_error(
        where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A folder that does not exist, or a folder given as the file: a traceback before, and for the
    # second a stray `.part` next to the folder. Now refused before the document is asked for.
    api = FakeApi().on(f"GET /api/v1/batch-results/{JOB_ID}/download", httpx2.Response(200, content=b"{}"))
    target = tmp_path / where
    assert run(api, "results", JOB_ID, "--download", str(target)) == 2
    _, err = output(capsys)
    assert err.startswith("lotlens: ") and str(target.name) in err and api.received == []
    assert list(tmp_path.parent.glob(f"{tmp_path.name}*.part")) == [] and list(tmp_path.glob("*.part")) == []


def test_cancel_prints_the_cancellation(capsys: pytest.CaptureFixture[str]) -> None:
    body = {"job_id": JOB_ID, "status": "cancelled", "cancelled_at": "2025-08-05T08:00:00Z", "message": "ok"}
    api = FakeApi().on(f"POST /api/v1/batch-jobs/{JOB_ID}/cancel", httpx2.Response(200, json=body))
    assert run(api, "cancel", JOB_ID) == 0
    printed, _ = output(capsys)
    assert printed == body


def test_jobs_sends_the_filters_as_a_signed_query(capsys: pytest.CaptureFixture[str]) -> None:
    page = {"jobs": [], "pagination": {"limit": 5, "offset": 10, "total": 10, "has_more": False,
                                       "next_cursor": None}}
    api = FakeApi().on("GET /api/v1/batch-jobs", httpx2.Response(200, json=page))
    assert run(api, "jobs", "--status", "completed", "--limit", "5", "--offset", "10") == 0
    assert api.received[-1].url.query == b"status=completed&limit=5&offset=10"
    printed, _ = output(capsys)
    assert printed == {"jobs": [], "pagination": page["pagination"]}
    assert run(api, "jobs", "--limit", "5", "--cursor", "1754379015123456.job-1") == 0
    assert api.received[-1].url.query == b"limit=5&offset=0&cursor=1754379015123456.job-1"


def lots_pages() -> FakeApi:
    """A job of 5 lots whose pages hold at most 2."""
    lot_ids = [f"lot-{i}" for i in range(5)]

    def page(request: httpx2.Request) -> httpx2.Response:
        offset = int(request.url.params["offset"])
        found = lot_ids[offset:offset + min(2, int(request.url.params["limit"]))]
        more = offset + len(found) < len(lot_ids)
        return httpx2.Response(200, json={
            "job_id": JOB_ID, "status": "processing", "lots": [lot_body(lot_id) for lot_id in found],
            "pagination": {"limit": len(found), "offset": offset, "total": len(lot_ids), "has_more": more,
                           "next_offset": offset + len(found) if more else None}})
    return FakeApi().on(f"GET /api/v1/batch-jobs/{JOB_ID}/lots", page)


def test_lots_prints_one_page_asked_with_the_filters(capsys: pytest.CaptureFixture[str]) -> None:
    api = lots_pages()
    assert run(api, "lots", JOB_ID, "--status", "completed", "--limit", "10", "--offset", "1") == 0
    assert [request.url.query for request in api.received] == [b"status=completed&limit=10&offset=1"]
    printed, _ = output(capsys)
    assert [lot["lot_id"] for lot in printed["lots"]] == ["lot-1", "lot-2"]
    assert printed["pagination"]["next_offset"] == 3 and printed["pagination"]["total"] == 5


def test_lots_all_walks_every_page_from_the_offset_one_lot_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    api = lots_pages()
    assert run(api, "lots", JOB_ID, "--all", "--offset", "1") == 0
    assert [request.url.params["offset"] for request in api.received] == ["1", "3"]
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["lot_id"] for line in lines] == ["lot-1", "lot-2", "lot-3", "lot-4"]


@pytest.mark.parametrize("argv", [
    [], ["frobnicate"], ["status"], ["jobs", "--status", "done"], ["jobs", "--limit", "many"],
    ["submit"], ["results", JOB_ID, "--download"], ["lots"], ["lots", JOB_ID, "--status", "done"],
])
def test_bad_usage_exits_2_without_a_request(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi()
    assert run(api, *argv) == 2
    assert api.received == [] and "usage: lotlens" in capsys.readouterr().err


@pytest.mark.parametrize("document", [
    "not json", {"lots": []}, {"lots": "two"}, [1, 2], [{"additional_info": "no id"}, {"lot_id": "b"}],
    {"lots": lots(2), "languages": "en"},
])
def test_an_unusable_submission_file_exits_2(tmp_path: Path, document: Any,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lots.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    api = FakeApi()
    assert run(api, "submit", str(path)) == 2
    assert api.received == [] and capsys.readouterr().err.startswith("lotlens: ")


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(FakeApi(), "submit", str(tmp_path / "absent.json")) == 2
    assert "cannot read" in capsys.readouterr().err


def test_without_a_key_nothing_is_sent_and_the_exit_status_is_2(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(cli.KEY_ENV)
    api = FakeApi()
    assert run(api, "status", JOB_ID) == 2
    assert api.received == [] and cli.KEY_ENV in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert "LOTLENS_CLIENT_KEY" in capsys.readouterr().out


def test_lots_all_into_a_reader_that_leaves_stops_quietly_with_status_0(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # `lotlens lots JOB --all | head -1`: the reader gone, the next write raised BrokenPipeError,
    # reported as a usage error (exit 2, "[Errno 32] Broken pipe").
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w", encoding="utf-8", buffering=1) as broken:
        monkeypatch.setattr(sys, "stdout", broken)
        assert run(lots_pages(), "lots", JOB_ID, "--all") == 0
    assert capsys.readouterr().err == ""


def test_a_broken_pipe_elsewhere_than_stdout_is_still_an_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Only stdout's reader leaving is a quiet success; a broken pipe anywhere else (the client's
    # own connection, say) is an error, as before: exit 1, a failure, not 2 (the command was right).
    def broken(*_args: Any) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(LotLensClient, "download_results", broken)
    assert run(FakeApi(), "results", JOB_ID, "--download", "/tmp/fifo") == 1
    assert "Broken pipe" in capsys.readouterr().err
