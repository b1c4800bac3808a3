"""Polling and control over the read models: status, results (streamed), listing, cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import urlencode

import httpx2
import orjson
import pytest
from sqlalchemy import Engine, QueuePool, insert

from lotlens_common.events import JobCancelled
from lotlens_common.read_models import get_job
from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import openai_batches
from lotlens_gateway.results import iter_results_document
from tests.conftest import new_id
from tests.integration.download_support import insert_long_texts_job
from tests.integration.gateway_support import (
    Gateway,
    consume,
    insert_finished_job,
    insert_running_job,
    make_lots,
)
from tests.integration.raw_http import answer_of, connect, read_to_close

pytestmark = pytest.mark.integration


STATUS = "/api/v1/batch-status/{job_id}"
RESULTS = "/api/v1/batch-results/{job_id}"
DOWNLOAD = "/api/v1/batch-results/{job_id}/download"


def add_batches(engine: Engine, job_id: str, *batches: tuple[str, str, int]) -> None:
    """(stage, batch id, minutes after now) rows of `openai_batches`."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(openai_batches), [
            {"batch_id": batch_id, "job_id": job_id, "stage": stage, "shard_id": new_id(), "attempt": 1,
             "lot_count": 1, "created_at": now + timedelta(minutes=minutes)}
            for stage, batch_id, minutes in batches])


def test_status_shows_progress_and_every_openai_batch_by_stage(gateway: Gateway, engine: Engine) -> None:
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(3), ["en", "de"])
    v1, v2, t1 = new_id("batch_v"), new_id("batch_v"), new_id("batch_t")
    add_batches(engine, job_id, ("vision", v1, 0), ("translation", t1, 2), ("vision", v2, 1))
    response = gateway.get_job(STATUS, job_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed" and body["job_id"] == job_id
    progress = dict(body["progress"])
    assert progress.pop("estimated_completion").endswith("Z")
    assert progress == {"total_lots": 3, "processed_lots": 3, "failed_lots": 0,
                        "completion_percentage": 100.0}
    assert body["processing_details"] == {
        "openai_vision_batch_id": v2, "openai_translation_batch_id": t1,
        "vision_batch_ids": [v1, v2], "translation_batch_ids": [t1], "current_stage": "completed"}
    assert body["openai_vision_batch_id"] == v2  # the 1.x document's top-level field
    assert body["created_at"].endswith("Z") and body["error_message"] is None
    assert body["languages"] == ["en", "de"] and body["webhook_configured"] is False


def test_results_of_a_running_job_are_202_not_completed(gateway: Gateway, engine: Engine) -> None:
    job_id = insert_running_job(engine, gateway.client_id, status="translating")
    for path in (RESULTS, DOWNLOAD):
        response = gateway.get_job(path, job_id)
        assert response.status_code == 202
        body = response.json()
        assert body["error"] == "Job not completed" and body["status"] == "translating"
        assert body["progress"]["completion_percentage"] == 25.0 and "message" in body


def test_a_job_slower_than_its_estimate_shows_an_end_still_ahead(gateway: Gateway, engine: Engine) -> None:
    # Created 3 h ago and estimated at 1 h, with 1 of its 4 lots done: at that pace, 9 h to go
    # (three times the time since its creation: asked under load a second later, 3 s more).
    created = datetime.now(UTC) - timedelta(hours=3)
    job_id = insert_running_job(engine, gateway.client_id, created_at=created)
    asked = datetime.now(UTC)
    status = gateway.get_job(STATUS, job_id).json()["progress"]
    pending = gateway.get_job(RESULTS, job_id).json()["progress"]
    jobs = gateway.list_jobs("limit=100").json()["jobs"]
    listed = next(job["progress"] for job in jobs if job["id"] == job_id)
    answered = datetime.now(UTC)
    for progress in (status, pending, listed):
        shown = datetime.fromisoformat(progress["estimated_completion"])
        earliest, latest = asked + 3 * (asked - created), answered + 3 * (answered - created)
        assert earliest - timedelta(seconds=2) <= shown <= latest + timedelta(seconds=2), progress


def test_results_of_a_finished_job_list_every_lot_in_request_order(gateway: Gateway, engine: Engine) -> None:
    lots = make_lots(3)
    job_id = insert_finished_job(engine, gateway.client_id, lots, ["en", "fr", "de"],
                                 failed=[lots[1]["lot_id"]])
    response = gateway.get_job(RESULTS, job_id)
    assert response.status_code == 200
    body = response.json()
    assert body["job_id"] == job_id and body["status"] == "completed" and body["completed_at"].endswith("Z")
    assert body["processing_summary"] == {"total_lots": 3, "processed_lots": 2, "failed_lots": 1,
                                          "total_images_processed": 6, "total_processing_time": "45 minutes"}
    results = body["results"]
    assert results["version"] == "1.0.0"
    assert [lot["lot_id"] for lot in results["lots"]] == [lot["lot_id"] for lot in lots]
    first, failed = results["lots"][0], results["lots"][1]
    assert [d["language"] for d in first["descriptions"]] == ["en", "fr", "de"]
    assert first["descriptions"][1]["damages"] == "<p>[fr] Car 0, front collision</p>"
    assert first["status"] == "completed" and first["processed_images"] == 2 and first["missing_images"] == []
    assert failed["status"] == "failed" and failed["descriptions"] == [] and failed["error_message"]


def test_the_download_streams_the_same_document_as_an_attachment(gateway: Gateway, engine: Engine) -> None:
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(2500), ["en", "de"])
    plain = gateway.get_job(RESULTS, job_id)
    with httpx2.stream("GET", f"{gateway.url}{DOWNLOAD.format(job_id=job_id)}",
                      headers={"X-Signature": gateway.sign(job_id)}) as download:
        assert download.status_code == 200
        disposition = f'attachment; filename="batch_results_{job_id}.json"'
        assert download.headers["content-disposition"] == disposition
        assert download.headers["content-type"] == "application/json"
        assert "content-length" not in download.headers  # streamed, not built in memory
        chunks = list(download.iter_raw())
    assert len(chunks) > 1
    document = orjson.loads(b"".join(chunks))
    assert document == plain.json()
    assert len(document["results"]["lots"]) == 2500


def test_a_streamed_download_holds_no_database_connection_while_the_client_reads(
        gateway: Gateway, engine: Engine) -> None:
    """A slow or stalled client took a connection of the gateway's write pool for its whole
    download, idle in the cursor's transaction: 50 of them took the pool, and intake, polling and
    the outbox relay waited 30 s for it and answered 500."""
    lots = make_lots(2500)
    job_id = insert_finished_job(engine, gateway.client_id, lots, ["en", "de"])
    with engine.connect() as conn:
        job = get_job(conn, job_id)
    assert job is not None
    before = cast(QueuePool, engine.pool).checkedout()
    chunks = iter_results_document(engine, job, chunk_bytes=64)
    first = next(chunks)  # the client has this chunk and takes its time over the next
    assert first.startswith(b'{"job_id"')
    assert cast(QueuePool, engine.pool).checkedout() == before, "a connection is held between two chunks"
    document = orjson.loads(first + b"".join(chunks))
    assert [lot["lot_id"] for lot in document["results"]["lots"]] == [lot["lot_id"] for lot in lots]
    lot_7 = document["results"]["lots"][7]
    assert lot_7["descriptions"][1]["damages"] == "<p>[de] Car 7, front collision</p>"
    assert cast(QueuePool, engine.pool).checkedout() == before


def test_a_small_jobs_results_are_one_body_with_the_streamed_documents_bytes(
        gateway: Gateway, engine: Engine) -> None:
    lots = make_lots(5)
    job_id = insert_finished_job(engine, gateway.client_id, lots, ["en", "fr", "de"],
                                 failed=[lots[2]["lot_id"]])
    with engine.connect() as conn:
        job = get_job(conn, job_id)
    assert job is not None
    streamed = b"".join(iter_results_document(engine, job, chunk_bytes=64))
    for path in (RESULTS, DOWNLOAD):
        response = gateway.get_job(path, job_id)
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert response.headers["content-length"] == str(len(response.content))  # one body
        assert response.content == streamed
    disposition = gateway.get_job(DOWNLOAD, job_id).headers["content-disposition"]
    assert disposition == f'attachment; filename="batch_results_{job_id}.json"'


def test_another_clients_job_and_an_unknown_job_are_404(gateway: Gateway, engine: Engine) -> None:
    theirs = insert_finished_job(engine, gateway.other_id, make_lots(2), ["en"])
    for path in (STATUS, RESULTS, DOWNLOAD):
        for job_id in (theirs, new_id("missing-")):
            response = gateway.get_job(path, job_id)
            assert response.status_code == 404, (path, response.text)
            assert response.json()["code"] == "JOB_NOT_FOUND"
    cancel = httpx2.post(f"{gateway.url}/api/v1/batch-jobs/{theirs}/cancel",
                        headers={"X-Signature": gateway.sign(theirs)})
    assert cancel.status_code == 404 and cancel.json()["code"] == "JOB_NOT_FOUND"
    # The owner sees it.
    assert gateway.get_job(STATUS, theirs, key=gateway.other_key).status_code == 200


def test_polling_without_a_signature_is_401_and_with_a_wrong_one_403(
        gateway: Gateway, engine: Engine) -> None:
    job_id = insert_running_job(engine, gateway.client_id)
    unsigned = httpx2.get(f"{gateway.url}/api/v1/batch-status/{job_id}")
    assert unsigned.status_code == 401 and unsigned.json()["code"] == "MISSING_SIGNATURE"
    # RFC 9110 11.6.1: a 401 carries a challenge; some clients take one without it for an error.
    assert unsigned.headers["www-authenticate"].startswith("HMAC-SHA256 ")
    other_id = httpx2.get(f"{gateway.url}/api/v1/batch-status/{job_id}",
                         headers={"X-Signature": gateway.sign("another-job-id")})
    assert other_id.status_code == 403 and other_id.json()["code"] == "INVALID_SIGNATURE"


def listing(gateway: Gateway, **query: Any) -> dict[str, Any]:
    response = gateway.list_jobs(urlencode(query))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_job_list_filters_by_status_and_time_and_pages(gateway: Gateway, engine: Engine) -> None:
    base = datetime(2025, 8, 5, 7, 30, tzinfo=UTC)
    done = [insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"],
                                created_at=base + timedelta(hours=h)) for h in range(3)]
    running = insert_running_job(engine, gateway.client_id, created_at=base + timedelta(hours=5))
    insert_running_job(engine, gateway.other_id, created_at=base)  # another client's: never listed

    everything = listing(gateway)
    assert [job["id"] for job in everything["jobs"]] == [running, *reversed(done)]
    assert everything["pagination"] == {"limit": 10, "offset": 0, "total": 4, "has_more": False,
                                          "next_cursor": None}
    item = everything["jobs"][0]
    assert item["status"] == "processing" and item["progress"]["completion_percentage"] == 25.0
    assert {"id", "status", "created_at", "updated_at", "total_lots", "processed_lots", "failed_lots",
            "languages", "progress", "webhook_configured"} <= set(item)

    completed = listing(gateway, status="completed", limit=2, offset=1)
    assert [job["id"] for job in completed["jobs"]] == [done[1], done[0]]
    assert completed["pagination"] == {"limit": 2, "offset": 1, "total": 3, "has_more": False,
                                         "next_cursor": None}
    first_page = listing(gateway, status="completed", limit=2)
    assert first_page["pagination"]["has_more"] is True

    window = listing(gateway, created_after="2025-08-05T08:30:00Z", created_before="2025-08-05T10:00:00")
    assert [job["id"] for job in window["jobs"]] == [done[2], done[1]]

    # An empty filter is no filter, as 1.x read it (`?status=&limit=…` in the contract's notation):
    # a query built from a template with nothing to fill in was 422.
    blank = gateway.list_jobs("status=&created_after=&created_before=&limit=10")
    assert blank.status_code == 200, blank.text
    assert [job["id"] for job in blank.json()["jobs"]] == [running, *reversed(done)]


def test_the_job_list_refuses_bad_parameters_and_bad_signatures(gateway: Gateway) -> None:
    # A number is no ISO 8601 time: pydantic read `20250805` as Unix seconds (1970-08-23), and the
    # filter let every job through.
    for query in ("limit=101", "limit=0", "offset=-1", "status=done", "created_after=yesterday",
                  "created_after=20250805", "created_before=1754380800"):
        response = gateway.list_jobs(query)
        assert response.status_code == 422, query
        assert response.json()["code"] == "VALIDATION_ERROR"
    unsigned = httpx2.get(f"{gateway.url}/api/v1/batch-jobs?limit=5")
    assert unsigned.status_code == 401
    signed_other_query = httpx2.get(f"{gateway.url}/api/v1/batch-jobs?limit=5",
                                   headers={"X-Signature": gateway.sign("limit=6")})
    assert signed_other_query.status_code == 403


def test_cancelling_a_running_job_publishes_job_cancelled(
        gateway: Gateway, engine: Engine, settings: ServiceSettings) -> None:
    job_id = gateway.submit(make_lots(2)).json()["job_id"]
    response = gateway.cancel(job_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["job_id"] == job_id and body["status"] == "cancelled" and body["cancelled_at"].endswith("Z")
    assert body["message"] == "Job successfully cancelled"
    events = consume(settings.kafka.bootstrap_servers, settings.topics.submissions, 4)
    last = events[-1][1]
    assert isinstance(last.event, JobCancelled)
    assert last.job_id == job_id and last.client_id == gateway.client_id


def test_cancelling_a_finished_job_is_400_with_its_status(gateway: Gateway, engine: Engine) -> None:
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"])
    response = gateway.cancel(job_id)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "Job cannot be cancelled" and body["status"] == "completed"
    assert body["message"].endswith("Current status: completed")


def test_no_api_answer_may_be_stored_by_a_cache(gateway: Gateway, engine: Engine) -> None:
    """Signed per-client answers behind a shared cache: without `no-store` a 200 is heuristically
    cacheable (RFC 9111 4.2.2), and X-Signature, unlike Authorization, does not stop a shared
    cache from serving it to the next asker, signed or not, or a finished job as still running."""
    running = insert_running_job(engine, gateway.client_id)
    done = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"])
    answers = [gateway.get_job(STATUS, running), gateway.get_job(RESULTS, running),
               gateway.get_job(RESULTS, done), gateway.get_job(DOWNLOAD, done),
               gateway.get_job(STATUS, "no-such-job"),
               httpx2.get(f"{gateway.url}{STATUS.format(job_id=done)}"), gateway.list_jobs("")]
    assert [answer.status_code for answer in answers] == [200, 202, 200, 200, 404, 401, 200]
    for answer in answers:
        assert answer.headers.get("cache-control") == "no-store", answer.request.url


def test_a_job_of_few_lots_but_many_bytes_is_streamed_and_one_of_few_bytes_is_one_body(
        gateway: Gateway, engine: Engine) -> None:
    """Up to 1,000 lots were built whole whatever their descriptions: at ten languages of long
    text that was 100 MB a request (800 MB at the longest answers), and a handful of downloads of
    one job took a gateway past its memory. Counting descriptions missed lots listing hundreds of
    missing images; the cut now counts the document's bytes (about 1 MB)."""
    long_texts = insert_long_texts_job(engine, gateway.client_id, 150)
    answer = gateway.get_job(RESULTS, long_texts)
    assert answer.status_code == 200 and "content-length" not in answer.headers  # streamed
    assert len(answer.json()["results"]["lots"]) == 150
    languages = ["en", "fr", "de", "es", "it", "pt", "nl", "pl", "sv", "da"]
    short_texts = insert_finished_job(engine, gateway.client_id, make_lots(150), languages)
    answer = gateway.get_job(RESULTS, short_texts)
    assert answer.status_code == 200 and answer.headers["content-length"] == str(len(answer.content))
    assert len(answer.json()["results"]["lots"]) == 150


def _list_raw(gateway: Gateway, query: bytes, signature: str) -> tuple[int, dict[str, Any]]:
    """GET the listing with a query string exactly as given (no HTTP client would send a JSON one)."""
    with connect(gateway) as sock:
        sock.sendall(b"GET /api/v1/batch-jobs?" + query + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"X-Signature: " + signature.encode() + b"\r\n\r\n")
        status, _, body = answer_of(read_to_close(sock))
    return status, body


def test_a_signature_for_another_call_does_not_sign_a_listing(gateway: Gateway, engine: Engine) -> None:
    """The same key signs job ids, raw bodies and the listing's raw query, and the listing ignored
    parameters it does not know: the X-Signature of a status poll listed all the client's jobs when
    the job id was sent as the query, and so did a captured test-image-validation body's."""
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"])
    status, body = _list_raw(gateway, job_id.encode(), gateway.sign(job_id))
    assert status == 422, body
    assert body["code"] == "VALIDATION_ERROR"
    assert body["details"]["errors"][0]["loc"] == ["query", job_id]
    image_check = b'{"urls":["https://img.example.com/a.jpg"]}'
    status, body = _list_raw(gateway, image_check, gateway.sign(image_check))
    assert status == 422, body
    assert body["code"] == "VALIDATION_ERROR"
    # Known names only, signed or not.
    for query in ("limit=5&foo=1", "LIMIT=5", "job=" + job_id):
        refused = gateway.list_jobs(query)
        assert refused.status_code == 422, (query, refused.text)
        assert refused.json()["code"] == "VALIDATION_ERROR"
    # What the SDK, the console and the recipes send is served as before.
    for query in ("", "limit=100", "status=completed&limit=20&offset=0", "limit=5&", "&limit=5", "status",
                  "lim%69t=5",
                  "status=&created_after=&created_before=&limit=10",
                  "limit=10&offset=0&created_after=2025-08-05T07%3A30%3A00Z&created_before=2999-01-01T00%3A00%3A00Z"):
        listed = gateway.list_jobs(query)
        assert listed.status_code == 200, (query, listed.text)
        assert job_id in [job["id"] for job in listed.json()["jobs"]]
