"""The clients against what the world answers: a proxy's 503, 502 or 504, no answer at all, a
409 for a key still in progress, odd Retry-After values, a body that cannot be decoded."""

from __future__ import annotations

import asyncio
import pickle
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest

from lotlens_client import (
    AsyncLotLensClient,
    LotLensClient,
    LotLensError,
    NetworkError,
    RateLimitedError,
    ServerError,
    ValidationError,
)
from lotlens_client.errors import parse_retry_after
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
)

RETRY = f"POST /api/v1/batch-jobs/{JOB_ID}/retry-failed"
CANCEL = f"POST /api/v1/batch-jobs/{JOB_ID}/cancel"


def no_answer(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ReadTimeout("timed out", request=request)


def in_progress() -> httpx2.Response:
    """The gateway's 409 while an earlier attempt with the same key is still being carried out."""
    return error(409, "IDEMPOTENCY_KEY_IN_PROGRESS", "still being processed", {"idempotency_key": "k"},
                 headers={"Retry-After": "5"})


def keys_sent(api: FakeApi) -> list[str | None]:
    return [request.headers.get("Idempotency-Key") for request in api.received]


def test_a_proxy_503_then_409_in_progress_is_waited_out_and_ends_in_the_one_job() -> None:
    # A proxy's 503 while the gateway still made the job; the resend met 409 in progress and was
    # raised as a final ValidationError ("refused as it stands") although the job was being made.
    proxy_503 = error(503, "HTTP_503", "upstream timeout", headers={"Retry-After": "1"})
    api = FakeApi().on(f"POST {SUBMIT}", proxy_503, in_progress(), httpx2.Response(201, json=accepted_body()))
    client, slept = client_of(api)
    assert client.submit_job(lots(2)).job_id == JOB_ID
    assert slept == [1.0, 5.0] and len(set(keys_sent(api))) == 1


def test_a_retry_of_failed_lots_in_progress_is_waited_out_too() -> None:
    api = FakeApi().on(RETRY, in_progress(), httpx2.Response(201, json=accepted_body()))
    client, slept = client_of(api)
    assert client.retry_failed(JOB_ID).job_id == JOB_ID and slept == [5.0]


def test_a_409_in_progress_is_waited_on_a_bounded_number_of_times() -> None:
    api = FakeApi().on(f"POST {SUBMIT}", in_progress())
    client, slept = client_of(api, max_retries=2)
    with pytest.raises(ValidationError) as raised:
        client.submit_job(lots(2), idempotency_key="order-9")
    assert raised.value.code == "IDEMPOTENCY_KEY_IN_PROGRESS" and slept == [5.0, 5.0]
    assert raised.value.idempotency_key == "order-9"


@pytest.mark.parametrize("lost", [
    no_answer, httpx2.Response(502, text="<html>Bad gateway</html>"),
    httpx2.Response(504, text="<html>Gateway Time-out</html>"),
], ids=["no-answer", "proxy-502", "proxy-504"])
def test_a_submission_whose_answer_was_lost_is_resent_under_the_same_key(lost: Any) -> None:
    # Its outcome is unknown (the gateway may have made the job): the resend under the same key is
    # answered with that job, never a second. It was raised, the key untold, and the caller's
    # retry made a second paid job.
    api = FakeApi().on(f"POST {SUBMIT}", lost, httpx2.Response(201, json=accepted_body()))
    client, slept = client_of(api)
    assert client.submit_job(lots(2)).job_id == JOB_ID
    keys = keys_sent(api)
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1] and slept == [1.0]


def test_when_the_resends_run_out_the_error_names_the_key_to_send_again_with() -> None:
    api = FakeApi().on(f"POST {SUBMIT}", no_answer)
    client, slept = client_of(api, max_retries=2)
    with pytest.raises(NetworkError) as raised:
        client.submit_job(lots(2))
    key = keys_sent(api)[0]
    assert key and set(keys_sent(api)) == {key} and slept == [1.0, 2.0]
    assert raised.value.idempotency_key == key and raised.value.details == {"idempotency_key": key}


def test_a_refusal_names_the_key_but_leaves_the_gateways_details_alone() -> None:
    invalid = error(422, "INVALID_IMAGE_URLS", "bad urls", {"invalid_urls": ["ftp://x"]})
    api = FakeApi().on(f"POST {SUBMIT}", invalid)
    client, _ = client_of(api)
    with pytest.raises(ValidationError) as raised:
        client.submit_job(lots(2), idempotency_key="order-1")
    assert raised.value.idempotency_key == "order-1" and raised.value.details == {"invalid_urls": ["ftp://x"]}
    assert len(api.received) == 1


def test_the_gateways_own_504_and_a_cancel_with_no_answer_are_not_sent_again() -> None:
    # The gateway's 504 OPENAI_TIMEOUT is its answer (the key released; a resend would pay again),
    # and a cancel has no key: a resend of one carried out would be refused JOB_NOT_CANCELLABLE.
    api = (FakeApi().on(f"POST {SUBMIT}", error(504, "OPENAI_TIMEOUT", "too slow"))
           .on(CANCEL, no_answer))
    client, slept = client_of(api)
    with pytest.raises(ServerError):
        client.describe_lot(lots(1)[0])
    with pytest.raises(NetworkError) as raised:
        client.cancel_job(JOB_ID)
    assert raised.value.idempotency_key is None
    assert len(api.received) == 2 and slept == []


def test_a_description_carries_one_key_through_a_503_and_its_resend() -> None:
    # The gateway stores and replays a synchronous answer under a key; without one every
    # automatic resend paid for the model again.
    busy = error(503, "INTAKE_BUSY", "busy", headers={"Retry-After": "2"})
    described = {"version": "1.0.0", "processing_mode": "synchronous", "total_lots": 1,
                 "processed_at": "2025-08-05T08:30:15Z", "lots": [lot_body("lot-1")]}
    api = FakeApi().on(f"POST {SUBMIT}", busy, httpx2.Response(200, json=described))
    client, _ = client_of(api)
    assert client.describe_lot(lots(1)[0]).lot_id == "lot-1"
    client.describe_lot(lots(1)[0], idempotency_key="sync-7")
    keys = keys_sent(api)
    assert keys[0] and keys[0] == keys[1] and keys[2] == "sync-7", keys


@pytest.mark.parametrize("key", ["заказ-1", "a\nb", " ", "x" * 256])
def test_an_idempotency_key_the_gateway_cannot_take_is_a_value_error_before_sending(key: str) -> None:
    api = FakeApi()
    client, _ = client_of(api)
    with pytest.raises(ValueError, match="idempotency_key"):
        client.submit_job(lots(2), idempotency_key=key)
    assert api.received == []


@pytest.mark.parametrize("raised", [
    ServerError(503, "SERVICE_UNAVAILABLE", "down", {"a": 1}),
    RateLimitedError(429, "RATE_LIMIT_EXCEEDED", "slow", {}, retry_after=3.0),
])
def test_errors_survive_pickling(raised: LotLensError) -> None:
    raised.idempotency_key = "k-1"
    again = pickle.loads(pickle.dumps(raised))
    assert type(again) is type(raised) and str(again) == str(raised)
    assert vars(again) == vars(raised)


def test_a_submission_retried_after_a_503_carries_one_idempotency_key() -> None:
    # RFC 9110 9.2.2: a client should not retry a POST by itself unless it knows the first was
    # not applied. A proxy's 503 with Retry-After says nothing of that: without a key the retry
    # could make a second job. One key per call, the same on each of its retries.
    busy = error(503, "SERVICE_UNAVAILABLE", "try later", headers={"Retry-After": "1"})
    api = FakeApi().on(f"POST {SUBMIT}", busy, httpx2.Response(201, json=accepted_body()),
                       busy, httpx2.Response(201, json=accepted_body()))
    client, _ = client_of(api)
    client.submit_job(lots(2))
    client.submit_job(lots(2))
    keys = [request.headers.get("Idempotency-Key") for request in api.received]
    assert keys[0] and keys[0] == keys[1] and keys[2] == keys[3] and keys[0] != keys[2], keys


@pytest.mark.parametrize("value", ["-3", "nan", "inf", "1.5", "1e2"])
def test_a_retry_after_that_is_not_digits_or_a_date_is_not_waited_on(value: str) -> None:
    assert parse_retry_after(value, 0.0) is None


def test_a_retry_after_in_asctime_form_is_gmt_whatever_the_local_zone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # RFC 9110 5.6.7: asctime is the third HTTP-date form, GMT by definition. It parsed to a naive
    # date that `.timestamp()` took as local time: hours off in New York.
    now = datetime(1994, 11, 6, 8, 49, 0, tzinfo=UTC).timestamp()
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse_retry_after("Sun Nov  6 08:49:37 1994", now) == 37.0
        assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now) == 37.0
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def _broken_gzip(_request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, content=b"not gzip at all", headers={"Content-Encoding": "gzip"})


def test_an_answer_that_cannot_be_decoded_is_a_network_error_and_leaves_no_part_file(tmp_path: Path) -> None:
    # httpx2's DecodingError is not a TransportError: it left the client raw (the contract of
    # the package is a LotLensError for every failure) and a half-written `.part` behind.
    client = LotLensClient(BASE, KEY, transport=httpx2.MockTransport(_broken_gzip))
    with pytest.raises(NetworkError, match="DecodingError"):
        client.job_status(JOB_ID)
    with pytest.raises(NetworkError, match="DecodingError"):
        client.download_results(JOB_ID, tmp_path / "out.json")
    assert list(tmp_path.iterdir()) == []

    async def scenario() -> None:
        async with AsyncLotLensClient(BASE, KEY, transport=httpx2.MockTransport(_broken_gzip)) as aclient:
            with pytest.raises(NetworkError, match="DecodingError"):
                await aclient.download_results(JOB_ID, tmp_path / "out.json")

    asyncio.run(scenario())
    assert list(tmp_path.iterdir()) == []
