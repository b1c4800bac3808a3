"""`LotLensClient` and `AsyncLotLensClient` over a fake API: what they send, parse and raise."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx2
import pytest

from lotlens_client import (
    AsyncLotLensClient,
    AuthenticationError,
    JobStatus,
    Lot,
    LotLensClient,
    LotLensError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    UnexpectedResponseError,
    ValidationError,
    WaitTimeoutError,
)
from lotlens_common import signing
from tests.unit.client_support import (
    BASE,
    JOB_ID,
    KEY,
    SUBMIT,
    FakeApi,
    accepted_body,
    client_of,
    error,
    lot_body,
    lots,
    not_completed_body,
    results_body,
    status_body,
)

STATUS = f"GET /api/v1/batch-status/{JOB_ID}"
RESULTS = f"GET /api/v1/batch-results/{JOB_ID}"
DOWNLOAD = f"GET /api/v1/batch-results/{JOB_ID}/download"
TS_CANCEL = "2025-08-05T08:00:00Z"


def test_a_batch_is_sent_signed_with_the_webhook_and_idempotency_key_and_parsed() -> None:
    api = FakeApi().on(f"POST {SUBMIT}", httpx2.Response(201, json=accepted_body()))
    client, _ = client_of(api)
    given: list[Lot | dict[str, Any]] = [Lot("lot-1", "BMW X5", ("https://img.example.com/1.jpg",)),
             {"lot_id": "lot-2", "additional_info": "Audi", "image_urls": ["https://img.example.com/2.jpg"],
              "webhook": "https://own.example.com/hook"}]
    accepted = client.submit_job(given, ["en", "de"], webhook="https://hooks.example.com/done",
                                 idempotency_key="order-77")
    assert accepted.job_id == JOB_ID and accepted.total_lots == 2 and accepted.languages == ("en", "de")
    assert accepted.created_at == datetime(2025, 8, 5, 7, 30, tzinfo=UTC)
    sent = api.body()
    assert sent["languages"] == ["en", "de"] and sent["version"] == "1.0.0"
    assert [lot["webhook"] for lot in sent["lots"]] == ["https://hooks.example.com/done", "https://own.example.com/hook"]
    assert sent["lots"][1]["images"] == [{"url": "https://img.example.com/2.jpg"}]
    assert sent["signature"] == signing.sign(KEY, signing.lots_messages(sent["lots"])[0])
    request = api.received[-1]
    assert request.headers["Idempotency-Key"] == "order-77"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("lotlens-client/")


def test_a_batch_needs_two_lots() -> None:
    client, _ = client_of(FakeApi())
    with pytest.raises(ValueError, match="describe_lot"):
        client.submit_job(lots(1))


def test_one_lot_is_described_synchronously() -> None:
    answer = {"version": "1.0.0", "processing_mode": "synchronous", "total_lots": 1,
              "processed_at": "2025-08-05T08:30:15Z", "lots": [{**lot_body("sync-1"), "processed_at": None}]}
    api = FakeApi().on(f"POST {SUBMIT}", httpx2.Response(200, json=answer))
    client, _ = client_of(api)
    lot = client.describe_lot({"lot_id": "sync-1", "images": [{"url": "https://img.example.com/a.jpg"}]},
                              ["en", "de"])
    assert lot.lot_id == "sync-1" and lot.status == "completed" and lot.processed_images == 2
    assert lot.description("de") == "<p>[de] dented door</p>" and lot.description("fr") is None
    assert lot.missing_images == ("https://img.example.com/missing.jpg",)
    assert lot.processed_at == datetime(2025, 8, 5, 8, 30, 15, tzinfo=UTC)  # from the answer's top level
    assert len(api.body()["lots"]) == 1
    assert api.received[-1].extensions["timeout"]["read"] == 310.0  # the contract allows 300 s


def test_other_calls_use_the_clients_timeout() -> None:
    api = FakeApi().on(STATUS, httpx2.Response(200, json=status_body()))
    client, _ = client_of(api, timeout=12.5)
    client.job_status(JOB_ID)
    assert api.received[-1].extensions["timeout"]["read"] == 12.5


def test_the_status_is_fetched_signed_over_the_job_id_and_parsed() -> None:
    api = FakeApi().on(STATUS, httpx2.Response(200, json=status_body()))
    client, _ = client_of(api)
    status = client.job_status(JOB_ID)
    assert api.received[-1].headers["X-Signature"] == signing.sign(KEY, JOB_ID.encode())
    assert status.status == "processing" and not status.is_terminal
    assert status.progress.completion_percentage == 50.0 and status.progress.total_lots == 2
    assert status.processing_details.vision_batch_ids == ("batch_v1", "batch_v2")
    assert status.processing_details.current_stage == "vision_analysis"
    assert status.webhook_configured is True and status.completed_at is None


def test_results_are_none_while_the_job_runs_and_parsed_once_it_is_done() -> None:
    api = FakeApi().on(RESULTS, httpx2.Response(202, json=not_completed_body()),
                       httpx2.Response(200, json=results_body()))
    client, _ = client_of(api)
    assert client.job_results(JOB_ID) is None
    results = client.job_results(JOB_ID)
    assert results is not None and results.status == "completed" and results.version == "1.0.0"
    assert [lot.lot_id for lot in results.lots] == ["lot-1", "lot-2"]
    assert results.processing_summary.total_images_processed == 4
    lot = results.lot("lot-2")
    assert lot is not None and lot.description("en") == "<p>[en] dented door</p>"


def test_the_listing_sends_exactly_the_query_string_it_signed() -> None:
    page = {"jobs": [{"id": JOB_ID, "job_id": JOB_ID, "status": "completed", "created_at": TS_CANCEL,
                      "total_lots": 2, "processed_lots": 2, "failed_lots": 0, "languages": ["en"],
                      "progress": {"completion_percentage": 100.0}, "webhook_configured": False}],
            "pagination": {"limit": 5, "offset": 5, "total": 6, "has_more": False}}
    api = FakeApi().on("GET /api/v1/batch-jobs", httpx2.Response(200, json=page))
    client, _ = client_of(api)
    result = client.list_jobs("completed", limit=5, offset=5, created_after=datetime(2025, 8, 5, 7, 30),
                              created_before=datetime(2025, 8, 5, 12, tzinfo=timezone(timedelta(hours=2))))
    request = api.received[-1]
    query = request.url.query.decode()
    assert query == ("status=completed&limit=5&offset=5&created_after=2025-08-05T07%3A30%3A00Z"
                     "&created_before=2025-08-05T10%3A00%3A00Z")
    assert request.headers["X-Signature"] == signing.sign(KEY, query.encode())
    assert result.pagination.total == 6 and not result.pagination.has_more
    (job,) = result.jobs
    assert job.job_id == JOB_ID and job.progress.total_lots == 2
    assert job.progress.completion_percentage == 100.0


def test_a_job_id_is_quoted_in_the_path_but_signed_as_is() -> None:
    odd = "job with space"
    answer = httpx2.Response(200, json=status_body(job_id=odd))
    api = FakeApi().on("GET /api/v1/batch-status/job with space", answer)
    client, _ = client_of(api)
    assert client.job_status(odd).job_id == odd
    assert api.received[-1].url.raw_path == b"/api/v1/batch-status/job%20with%20space"
    with pytest.raises(ValueError):
        client.job_status("")


@pytest.mark.parametrize(("status", "code", "expected"), [
    (400, "INVALID_JSON", ValidationError), (401, "MISSING_SIGNATURE", AuthenticationError),
    (403, "INVALID_SIGNATURE", AuthenticationError), (404, "JOB_NOT_FOUND", NotFoundError),
    (409, "DUPLICATE_LOT_ID", ValidationError), (413, "BATCH_SIZE_EXCEEDED", ValidationError),
    (422, "INVALID_IMAGE_URLS", ValidationError), (500, "INTERNAL_ERROR", ServerError),
    (502, "OPENAI_UNAVAILABLE", ServerError), (503, "SERVICE_UNAVAILABLE", ServerError),
    (504, "OPENAI_TIMEOUT", ServerError), (405, "METHOD_NOT_ALLOWED", LotLensError),
])
def test_each_error_status_raises_its_exception_with_code_message_and_details(
        status: int, code: str, expected: type[LotLensError]) -> None:
    details = {"invalid_urls": ["ftp://example.com/a.jpg"]}
    api = FakeApi().on(STATUS, error(status, code, "what went wrong", details))
    client, _ = client_of(api)
    with pytest.raises(expected) as raised:
        client.job_status(JOB_ID)
    assert type(raised.value) is expected
    assert (raised.value.status, raised.value.code) == (status, code)
    assert raised.value.message == "what went wrong" and raised.value.details == details


def test_a_wrong_key_is_an_authentication_error() -> None:
    client, _ = client_of(FakeApi().on(STATUS, httpx2.Response(200, json=status_body())), key="not-the-key")
    with pytest.raises(AuthenticationError) as raised:
        client.job_status(JOB_ID)
    assert raised.value.status == 403 and raised.value.code == "INVALID_SIGNATURE"


def test_cancelling_a_finished_job_is_a_validation_error_naming_its_status() -> None:
    refusal = {"error": "Job cannot be cancelled", "status": "completed", "code": "JOB_NOT_CANCELLABLE",
               "message": "Only pending, processing, or translating jobs can be cancelled."}
    cancelled = {"job_id": JOB_ID, "status": "cancelled", "cancelled_at": TS_CANCEL,
                 "message": "Job successfully cancelled"}
    api = FakeApi().on(f"POST /api/v1/batch-jobs/{JOB_ID}/cancel", httpx2.Response(200, json=cancelled),
                       httpx2.Response(400, json=refusal))
    client, _ = client_of(api)
    assert client.cancel_job(JOB_ID).cancelled_at == datetime(2025, 8, 5, 8, tzinfo=UTC)
    with pytest.raises(ValidationError) as raised:
        client.cancel_job(JOB_ID)
    assert raised.value.code == "JOB_NOT_CANCELLABLE" and raised.value.details == {"status": "completed"}


def rate_limited(retry_after: str = "2") -> httpx2.Response:
    return error(429, "RATE_LIMIT_EXCEEDED", "slow down", {"retry_after": 2},
                 headers={"Retry-After": retry_after})


def test_a_429_is_retried_after_its_retry_after() -> None:
    api = FakeApi().on(STATUS, rate_limited("2"), rate_limited("3"), httpx2.Response(200, json=status_body()))
    client, slept = client_of(api)
    assert client.job_status(JOB_ID).status == "processing"
    assert slept == [2.0, 3.0] and len(api.received) == 3


def test_retries_are_bounded_and_then_the_429_is_raised_with_retry_after() -> None:
    api = FakeApi().on(STATUS, rate_limited("1"))
    client, slept = client_of(api, max_retries=2)
    with pytest.raises(RateLimitedError) as raised:
        client.job_status(JOB_ID)
    assert raised.value.retry_after == 1.0 and raised.value.status == 429
    assert slept == [1.0, 1.0] and len(api.received) == 3


def test_a_503_that_says_when_to_come_back_is_retried_and_one_that_does_not_is_raised() -> None:
    # The gateway wrote nothing (every intake slot taken): the same submission is sent again.
    busy = error(503, "INTAKE_BUSY", "taking other large jobs", {"waited_s": 20.0},
                 headers={"Retry-After": "10"})
    accepted = httpx2.Response(201, json=accepted_body())
    api = FakeApi().on(f"POST {SUBMIT}", busy, accepted)
    client, slept = client_of(api)
    assert client.submit_job(lots(2)).job_id == accepted_body()["job_id"]
    assert slept == [10.0] and api.received[0].content == api.received[1].content

    down = FakeApi().on(STATUS, error(503, "SERVICE_UNAVAILABLE", "no Retry-After"))
    client, slept = client_of(down)
    with pytest.raises(ServerError):
        client.job_status(JOB_ID)
    assert slept == [] and len(down.received) == 1


def test_a_retry_after_longer_than_the_client_waits_is_raised_at_once() -> None:
    api = FakeApi().on(f"POST {SUBMIT}", rate_limited("45"))
    client, slept = client_of(api, max_retry_wait_s=10)
    with pytest.raises(RateLimitedError) as raised:
        client.submit_job(lots(2))
    assert raised.value.retry_after == 45.0 and slept == []


def test_an_answer_that_is_not_the_contract_is_an_unexpected_response() -> None:
    api = FakeApi().on(STATUS, httpx2.Response(200, text="<html>proxy error</html>"),
                       httpx2.Response(200, json={"status": "processing"}))
    client, _ = client_of(api)
    with pytest.raises(UnexpectedResponseError, match="not JSON"):
        client.job_status(JOB_ID)
    with pytest.raises(UnexpectedResponseError, match="shape"):
        client.job_status(JOB_ID)


def test_an_html_error_page_still_maps_by_status() -> None:
    api = FakeApi().on(STATUS, httpx2.Response(502, text="<html>Bad gateway</html>"))
    client, _ = client_of(api)
    with pytest.raises(ServerError) as raised:
        client.job_status(JOB_ID)
    assert raised.value.code == "HTTP_502"


def test_no_answer_is_a_network_error() -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)
    client = LotLensClient(BASE, KEY, transport=httpx2.MockTransport(refuse))
    with pytest.raises(NetworkError) as raised:
        client.job_status(JOB_ID)
    assert raised.value.status is None and "connection refused" in raised.value.message


def test_the_download_streams_the_document_to_the_file(tmp_path: Path) -> None:
    document = json.dumps(results_body()).encode()
    chunks = [document[i:i + 100] for i in range(0, len(document), 100)]
    attachment = f'attachment; filename="batch_results_{JOB_ID}.json"'
    streamed = httpx2.Response(200, stream=httpx2.ByteStream(b"".join(chunks)),
                              headers={"Content-Disposition": attachment})
    api = FakeApi().on(DOWNLOAD, httpx2.Response(202, json=not_completed_body()), streamed)
    client, _ = client_of(api)
    target = tmp_path / "out.json"
    assert client.download_results(JOB_ID, target) is None
    assert not target.exists()
    assert client.download_results(JOB_ID, target) == target
    assert target.read_bytes() == document
    assert list(tmp_path.iterdir()) == [target]  # no `.part` left behind


def test_a_failed_download_raises_and_writes_nothing(tmp_path: Path) -> None:
    api = FakeApi().on(DOWNLOAD, error(404, "JOB_NOT_FOUND"))
    client, _ = client_of(api)
    with pytest.raises(NotFoundError):
        client.download_results(JOB_ID, tmp_path / "out.json")
    assert list(tmp_path.iterdir()) == []


def test_waiting_polls_until_a_terminal_status_and_reports_progress() -> None:
    api = FakeApi().on(STATUS, *(httpx2.Response(200, json=status_body(s, p)) for s, p in
                                 [("pending", 0.0), ("processing", 50.0), ("translating", 90.0),
                                  ("completed", 100.0)]))
    client, slept = client_of(api)
    seen: list[JobStatus] = []
    final = client.wait_for_job(JOB_ID, poll_interval_s=7, on_progress=seen.append)
    assert final.status == "completed" and final.is_terminal
    assert [s.status for s in seen] == ["pending", "processing", "translating", "completed"]
    assert slept == [7, 7, 7]


def test_waiting_gives_up_after_the_timeout() -> None:
    api = FakeApi().on(STATUS, httpx2.Response(200, json=status_body("processing")))
    client, _ = client_of(api)
    with pytest.raises(WaitTimeoutError) as raised:
        client.wait_for_job(JOB_ID, poll_interval_s=0, timeout_s=0)
    assert isinstance(raised.value, TimeoutError) and raised.value.details["status"] == "processing"


def test_the_async_client_sends_the_same_requests_and_raises_the_same_errors(tmp_path: Path) -> None:
    document = json.dumps(results_body()).encode()
    api = (FakeApi()
           .on(f"POST {SUBMIT}", httpx2.Response(201, json=accepted_body()))
           .on(STATUS, rate_limited("4"), httpx2.Response(200, json=status_body("processing")),
               httpx2.Response(200, json=status_body("completed", 100.0)))
           .on(RESULTS, httpx2.Response(200, json=results_body()))
           .on(DOWNLOAD, httpx2.Response(200, content=document))
           .on("GET /api/v1/batch-status/unknown", error(404, "JOB_NOT_FOUND")))
    slept: list[float] = []

    async def record_sleep(seconds: float) -> None:
        slept.append(seconds)

    async def scenario() -> None:
        async with AsyncLotLensClient(BASE, KEY, transport=api.transport(), sleep=record_sleep) as client:
            accepted = await client.submit_job(lots(2), ["en", "de"])
            seen: list[str] = []
            final = await client.wait_for_job(accepted.job_id, poll_interval_s=3,
                                              on_progress=lambda s: seen.append(s.status))
            assert final.status == "completed" and seen == ["processing", "completed"]
            results = await client.job_results(JOB_ID)
            assert results is not None and len(results.lots) == 2
            assert await client.download_results(JOB_ID, tmp_path / "r.json") == tmp_path / "r.json"
            with pytest.raises(NotFoundError):
                await client.job_status("unknown")

    asyncio.run(scenario())
    assert slept == [4.0, 3]
    assert (tmp_path / "r.json").read_bytes() == document
    assert api.body(0)["signature"] == signing.sign(KEY, signing.lots_messages(api.body(0)["lots"])[0])
