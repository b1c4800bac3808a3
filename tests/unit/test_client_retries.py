"""The clients against what the world answers: a proxy's 503, odd Retry-After values, a body
that cannot be decoded."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest

from lotlens_client import AsyncLotLensClient, LotLensClient, NetworkError
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
    lots,
)


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
