"""The integrators' own code against a real gateway, unchanged: seed 003's Python client and its
`main()`, and seed 004's cURL + openssl recipes (run by bash, with only the host, key and job id
filled in), each of their requests answered with the HTTP status the contract promises."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from lotlens_client import LotLensClient
from tests.integration.gateway_support import (
    Gateway,
    insert_finished_job,
    make_lots,
)
from tests.seeds import bash_block_after, python_block_after, run_recipe, seed_client_class

pytestmark = pytest.mark.integration


SEED_HOST = "http://localhost:5000"
SEED_KEY = "your-shared-key"
SEED_JOB_ID = "550e8400-e29b-41d4-a716-446655440000"


def cars(count: int) -> list[dict[str, Any]]:
    """Lots in the seed client's `cars_data` shape."""
    return [{"lot_id": lot["lot_id"], "additional_info": lot["additional_info"],
             "image_urls": [image["url"] for image in lot["images"]]} for lot in make_lots(count)]


def run_bash(script: str, cwd: Path) -> str:
    done = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=True)
    return done.stdout


def json_values(output: str) -> list[Any]:
    """Every JSON value printed one after the other (curl prints bodies without separators)."""
    decoder, values, position = json.JSONDecoder(), [], 0
    while position < len(output):
        if output[position].isspace():
            position += 1
            continue
        value, position = decoder.raw_decode(output, position)
        values.append(value)
    return values


def test_the_seed_client_submits_polls_and_cancels_a_batch(gateway: Gateway) -> None:
    client = seed_client_class()(gateway.url, gateway.key)
    job_id, error = client.batch_generate(cars(2), languages=["en", "de", "fr"],
                                          webhook_url="https://your-app.com/webhooks/generation-complete")
    assert error is None and job_id

    status, error = client.get_job_status(job_id)
    assert error is None
    assert status["status"] == "pending" and status["progress"]["total_lots"] == 2
    assert status["progress"]["completion_percentage"] == 0.0

    results, error = client.get_job_results(job_id)
    assert results is None and error == "Job not completed yet"

    assert client.cancel_job(job_id) == (True, "Job cancelled successfully")


def test_the_seed_client_fetches_and_downloads_the_results_of_a_finished_job(
        gateway: Gateway, engine: Engine, tmp_path: Path) -> None:
    lots = make_lots(3)
    job_id = insert_finished_job(engine, gateway.client_id, lots, ["en", "de"])
    client = seed_client_class()(gateway.url, gateway.key)

    seen: list[dict[str, Any]] = []
    results, error = client.poll_for_completion(job_id, poll_interval=0, max_wait_time=10,
                                                progress_callback=seen.append)
    assert error is None and seen[-1]["status"] == "completed"
    assert results["processing_summary"]["processed_lots"] == 3
    assert [lot["lot_id"] for lot in results["results"]["lots"]] == [lot["lot_id"] for lot in lots]

    target = tmp_path / "results.json"
    assert client.download_results(job_id, str(target)) == (True, f"Results saved to {target}")
    assert json.loads(target.read_text(encoding="utf-8")) == results

    cancelled, message = client.cancel_job(job_id)
    assert cancelled is False and "Job cannot be cancelled" in message


def test_the_seed_client_cannot_see_another_clients_job(gateway: Gateway, engine: Engine) -> None:
    job_id = insert_finished_job(engine, gateway.other_id, make_lots(2), ["en"])
    client = seed_client_class()(gateway.url, gateway.key)
    status, error = client.get_job_status(job_id)
    assert status is None and "JOB_NOT_FOUND" in error
    stranger = seed_client_class()(gateway.url, "a-key-nobody-has")
    _, error = stranger.get_job_status(job_id)
    assert "INVALID_SIGNATURE" in error


def filled(script: str, gateway: Gateway, job_id: str = SEED_JOB_ID) -> str:
    return script.replace(SEED_HOST, gateway.url).replace(SEED_KEY, gateway.key).replace(SEED_JOB_ID, job_id)


def submit_with_curl_recipe(gateway: Gateway, tmp_path: Path) -> dict[str, Any]:
    """Seed 004's batch cURL request, signed the way its recipe signs: `echo '<lots>' | openssl dgst`."""
    script = filled(bash_block_after("#### Пакетная обработка\n"), gateway)
    body = re.search(r"-d '(.*)'", script, re.S)
    assert body is not None
    lots = json.loads(body.group(1))["lots"]
    as_typed = json.dumps(lots, separators=(",", ":"))
    # echo adds a trailing newline; openssl prints "SHA2-256(stdin)= <hex>".
    signature = run_bash(f"echo '{as_typed}' | openssl dgst -sha256 -hmac \"{gateway.key}\" | sed 's/^.* //'",
                         tmp_path).strip()
    assert re.fullmatch(r"[0-9a-f]{64}", signature)
    answer, statuses = run_recipe(script.replace("calculated_hmac_signature_here", signature), tmp_path)
    assert statuses == [201]
    accepted: dict[str, Any] = json.loads(answer)
    return accepted


def test_the_curl_recipes_submit_poll_download_and_cancel(gateway: Gateway, tmp_path: Path) -> None:
    accepted = submit_with_curl_recipe(gateway, tmp_path)
    assert accepted["status"] == "accepted" and accepted["total_lots"] == 2
    assert accepted["languages"] == ["en", "ru"]
    job_id = accepted["job_id"]

    script = filled(bash_block_after("#### Polling статуса и результатов"), gateway, job_id)
    bodies, statuses = run_recipe(script, tmp_path)
    # status, results (202: still running), download (202), the listing signed the 1.x way, cancel
    assert statuses == [200, 202, 202, 403, 200]
    status, results, listing, cancelled = json_values(bodies)
    assert status["job_id"] == job_id and status["status"] == "pending"
    assert results["error"] == "Job not completed"
    # The recipe signs the job id for the job list too; the contract signs the list's raw query string.
    assert listing["code"] == "INVALID_SIGNATURE"
    assert cancelled == {**cancelled, "job_id": job_id, "status": "cancelled"}
    assert json.loads((tmp_path / f"batch_results_{job_id}.json").read_text())["error"] == "Job not completed"


def test_the_curl_recipes_fetch_a_finished_jobs_results(
        gateway: Gateway, engine: Engine, tmp_path: Path) -> None:
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en", "ru"])
    script = filled(bash_block_after("#### Polling статуса и результатов"), gateway, job_id)
    bodies, statuses = run_recipe(script, tmp_path)
    assert statuses == [200, 200, 200, 403, 400]  # ...; cancelling a finished job: 400
    status, results, _listing, refused = json_values(bodies)
    assert status["status"] == "completed"
    assert results["status"] == "completed" and len(results["results"]["lots"]) == 2
    assert json.loads((tmp_path / f"batch_results_{job_id}.json").read_text()) == results
    assert refused["error"] == "Job cannot be cancelled"


class PipelineMeanwhile:
    """Seed 003's `time` for its `main()`: the real clock, and a `sleep` during which the
    pipeline finishes the client's newest job (its results projected as the result-store would)."""

    time = staticmethod(time.time)

    def __init__(self, gateway: Gateway, engine: Engine) -> None:
        self._gateway, self._engine = gateway, engine
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        with LotLensClient(self._gateway.url, self._gateway.key) as sdk:
            (job,) = sdk.list_jobs(limit=1).jobs
            lot_ids = [lot.lot_id for lot in sdk.iter_lots(job.job_id)]
        described = [{"lot_id": lot_id, "additional_info": "described meanwhile",
                      "images": [{"url": f"https://example.com/{lot_id}.jpg"}]} for lot_id in lot_ids]
        insert_finished_job(self._engine, self._gateway.client_id, described, job.languages,
                            job_id=job.job_id)


def test_the_seed_clients_main_runs_as_printed(gateway: Gateway, engine: Engine, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # 003's own examples, host and key filled in: a lot described at once (its example.com images
    # cannot be fetched here: it fails, with 200), then a batch job polled, fetched and downloaded.
    source = python_block_after("### Python Client SDK").replace(SEED_HOST, gateway.url).replace(SEED_KEY,
                                                                                                gateway.key)
    seed: dict[str, Any] = {"__name__": "seed"}
    exec(compile(source, "seed:003 main", "exec"), seed)
    seed["time"] = clock = PipelineMeanwhile(gateway, engine)
    monkeypatch.chdir(tmp_path)

    seed["main"]()

    printed = capsys.readouterr().out
    job_id = re.search(r"^Batch job created: (\S+)$", printed, re.M)
    assert job_id is not None, printed
    assert clock.slept == [30]
    assert printed.splitlines() == [
        "=== Синхронная обработка ===", "Status: 200", "Descriptions generated for lot: sync-test-001", "",
        "=== Пакетная обработка ===", f"Batch job created: {job_id.group(1)}",
        "Progress: 0.0% (0/2 lots)", "Progress: 100.0% (2/2 lots)",
        "Batch processing completed!", "Processed 2 lots",
        f"Download: Results saved to batch_results_{job_id.group(1)}.json"]
    downloaded = json.loads((tmp_path / f"batch_results_{job_id.group(1)}.json").read_text(encoding="utf-8"))
    assert [lot["lot_id"] for lot in downloaded["results"]["lots"]] == ["batch-001", "batch-002"]
