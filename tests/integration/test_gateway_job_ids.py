"""A job id is a UUID, and UUIDs are case-insensitive on input (RFC 9562 §4): a client whose store
hands it back in capitals (SQL Server's `uniqueidentifier` read through pyodbc, Oracle's RAWTOHEX)
still reaches its job, signing the id exactly as in the path."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import Engine

from tests.integration.gateway_support import Gateway, insert_finished_job, make_lots
from tests.seeds import seed_client_class

pytestmark = pytest.mark.integration


def test_the_seed_client_polls_and_cancels_a_job_by_its_id_in_capitals(gateway: Gateway) -> None:
    client = seed_client_class()(gateway.url, gateway.key)
    cars = [{"lot_id": lot["lot_id"], "additional_info": lot["additional_info"],
             "image_urls": [image["url"] for image in lot["images"]]} for lot in make_lots(2)]
    job_id, error = client.batch_generate(cars, languages=["en", "de"])
    assert error is None and job_id == job_id.lower()
    stored = job_id.upper()

    status, error = client.get_job_status(stored)
    # It was: "Failed to get job status: {"error":"Not found","message":"Job 8A1D…23 not found", …}"
    assert error is None, error
    assert status["job_id"] == job_id and status["status"] == "pending"
    assert client.get_job_results(stored) == (None, "Job not completed yet")

    assert client.cancel_job(stored) == (True, "Job cancelled successfully")
    # The cancellation is the job's own: its id as the gateway wrote it reads cancelled.
    status, error = client.get_job_status(job_id)
    assert error is None and status["status"] == "cancelled"


def test_a_finished_jobs_results_download_and_lots_answer_its_id_in_capitals(
        gateway: Gateway, engine: Engine, tmp_path: Path) -> None:
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"], job_id=str(uuid.uuid4()))
    client = seed_client_class()(gateway.url, gateway.key)
    results, error = client.get_job_results(job_id.upper())
    assert error is None, error
    assert results["job_id"] == job_id and len(results["results"]["lots"]) == 2
    target = tmp_path / "results.json"
    assert client.download_results(job_id.upper(), str(target))[0] is True

    lots = gateway.get_job("/api/v1/batch-jobs/{job_id}/lots", job_id.upper())
    assert lots.status_code == 200, lots.text
    assert lots.json()["job_id"] == job_id


def test_asking_for_a_retry_by_the_id_in_capitals_is_the_same_retry_not_a_second_job(
        gateway: Gateway, engine: Engine) -> None:
    lot_list = make_lots(3)
    job_id = insert_finished_job(engine, gateway.client_id, lot_list, ["en"], job_id=str(uuid.uuid4()),
                                 failed=[lot_list[1]["lot_id"]])

    def retry(path_id: str) -> httpx2.Response:
        return httpx2.post(f"{gateway.url}/api/v1/batch-jobs/{path_id}/retry-failed",
                           headers={"X-Signature": gateway.sign(path_id)}, timeout=30)

    first = retry(job_id)
    assert first.status_code == 201, first.text
    again = retry(job_id.upper())
    assert again.status_code == 200, again.text
    assert again.json()["job_id"] == first.json()["job_id"]


def test_an_id_that_only_looks_like_another_jobs_is_still_not_found(gateway: Gateway, engine: Engine) -> None:
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"], job_id=str(uuid.uuid4()))
    for spelling in (f"{{{job_id}}}", job_id.replace("-", ""), f" {job_id}", f"{job_id}0"):
        response = gateway.get_job("/api/v1/batch-status/{job_id}", spelling)
        assert response.status_code == 404, (spelling, response.text)
    # Another client's job stays another client's, however it is spelt.
    theirs = gateway.get_job("/api/v1/batch-status/{job_id}", job_id.upper(), key=gateway.other_key)
    assert theirs.status_code == 404 and theirs.json()["code"] == "JOB_NOT_FOUND"
