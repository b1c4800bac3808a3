"""`wait_for_job` through what a long wait meets (a dropped connection, a proxy's 502, a 503), and
answers no server should give: infinite counts, JSON nested past Python's recursion limit, lots
pages that point backwards."""

from __future__ import annotations

import asyncio
from itertools import islice
from typing import Any

import httpx2
import pytest

from lotlens_client import (
    AsyncLotLensClient,
    AuthenticationError,
    LotLensError,
    NetworkError,
    UnexpectedResponseError,
    WaitTimeoutError,
)
from tests.unit.client_support import (
    BASE,
    JOB_ID,
    KEY,
    FakeApi,
    client_of,
    clocked_client,
    error,
    lot_body,
    status_body,
)

STATUS = f"GET /api/v1/batch-status/{JOB_ID}"
LOTS = f"GET /api/v1/batch-jobs/{JOB_ID}/lots"


def dropped(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.RemoteProtocolError("peer closed connection", request=request)


BLIPS = [dropped, httpx2.Response(502, text="<html>Bad gateway</html>"),
         error(503, "SERVICE_UNAVAILABLE", "no Retry-After")]


@pytest.mark.parametrize("blip", BLIPS, ids=["dropped", "proxy-502", "503"])
def test_a_wait_polls_again_after_a_blip_instead_of_ending(blip: Any) -> None:
    # A status poll is an idempotent GET: one dropped connection ended a 24-hour wait.
    api = FakeApi().on(STATUS, httpx2.Response(200, json=status_body("processing")), blip,
                       httpx2.Response(200, json=status_body("completed", 100.0)))
    client, slept = client_of(api)
    assert client.wait_for_job(JOB_ID, poll_interval_s=7).status == "completed"
    assert slept == [7, 7] and len(api.received) == 3


def test_a_wait_that_only_meets_blips_ends_in_wait_timeout_caused_by_the_last_one() -> None:
    # It raised the last NetworkError itself: a caller catching WaitTimeoutError (or TimeoutError)
    # for "the job took too long" missed it.
    api = FakeApi().on(STATUS, dropped)
    client, slept = client_of(api)
    with pytest.raises(WaitTimeoutError, match="RemoteProtocolError") as raised:
        client.wait_for_job(JOB_ID, poll_interval_s=1, timeout_s=0)
    assert isinstance(raised.value, TimeoutError) and isinstance(raised.value.__cause__, NetworkError)
    assert raised.value.details["job_id"] == JOB_ID and raised.value.details["last_error"] == "NETWORK_ERROR"
    assert slept == [] and len(api.received) == 1


def test_every_failed_poll_is_told_to_on_poll_failed_and_the_last_status_is_named() -> None:
    proxy_502 = httpx2.Response(502, text="<html>Bad gateway</html>")
    api = FakeApi().on(STATUS, httpx2.Response(200, json=status_body("processing")), dropped, proxy_502)
    client, clock = clocked_client(api)
    failed: list[LotLensError] = []
    with pytest.raises(WaitTimeoutError) as raised:
        client.wait_for_job(JOB_ID, poll_interval_s=10, timeout_s=25, on_poll_failed=failed.append)
    assert [error.code for error in failed] == ["NETWORK_ERROR", "HTTP_502", "HTTP_502"]
    assert clock.slept == [10, 10, 5] and len(api.received) == 4
    assert raised.value.__cause__ is failed[-1] and raised.value.details["status"] == "processing"
    assert "no status poll answered" in raised.value.message


def test_the_async_wait_ends_in_wait_timeout_too() -> None:
    api = FakeApi().on(STATUS, dropped)
    failed: list[LotLensError] = []

    async def scenario() -> None:
        async with AsyncLotLensClient(BASE, KEY, transport=api.transport()) as client:
            await client.wait_for_job(JOB_ID, timeout_s=0, on_poll_failed=failed.append)

    with pytest.raises(WaitTimeoutError) as raised:
        asyncio.run(scenario())
    assert isinstance(raised.value.__cause__, NetworkError) and len(failed) == 1


def test_a_wait_ends_at_once_on_an_error_that_another_poll_would_not_change() -> None:
    api = FakeApi().on(STATUS, error(403, "INVALID_SIGNATURE"))
    client, slept = client_of(api)
    with pytest.raises(AuthenticationError):
        client.wait_for_job(JOB_ID)
    assert slept == []


def test_the_async_wait_polls_again_after_a_blip() -> None:
    api = FakeApi().on(STATUS, dropped, httpx2.Response(200, json=status_body("completed", 100.0)))
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    async def scenario() -> str:
        async with AsyncLotLensClient(BASE, KEY, transport=api.transport(), sleep=record) as client:
            return (await client.wait_for_job(JOB_ID, poll_interval_s=3)).status

    assert asyncio.run(scenario()) == "completed" and slept == [3]


@pytest.mark.parametrize("interval", [-1.0, float("nan"), float("inf")])
def test_a_poll_interval_that_is_no_number_of_seconds_is_refused_before_polling(interval: float) -> None:
    api = FakeApi()
    client, _ = client_of(api)
    with pytest.raises(ValueError, match="poll_interval_s"):
        client.wait_for_job(JOB_ID, poll_interval_s=interval)
    assert api.received == []


def test_a_poll_interval_of_zero_polls_at_the_floor() -> None:
    api = FakeApi().on(STATUS, httpx2.Response(200, json=status_body("processing")),
                       httpx2.Response(200, json=status_body("completed", 100.0)))
    client, slept = client_of(api)
    client.wait_for_job(JOB_ID, poll_interval_s=0)
    assert slept == [0.5]


@pytest.mark.parametrize("body", [
    b'{"job_id":"x","status":"processing","progress":{"total_lots":1e999}}',
    b'{"job_id":"x","status":"processing","progress":{"failed_lots":-Infinity}}',
    b"[" * 100_000 + b"]" * 100_000,
], ids=["1e999", "infinity", "nested"])
@pytest.mark.parametrize("status", [200, 500])
def test_a_hostile_answer_is_a_lotlens_error_not_a_traceback(body: bytes, status: int) -> None:
    # OverflowError (int of infinity) and RecursionError (json.loads) escaped the client and the CLI.
    api = FakeApi().on(STATUS, httpx2.Response(status, content=body))
    client, _ = client_of(api)
    with pytest.raises(LotLensError) as raised:
        client.job_status(JOB_ID)
    assert raised.value.status == status
    assert status == 500 or isinstance(raised.value, UnexpectedResponseError)


@pytest.mark.parametrize("after", [0, 3])
def test_a_lots_page_that_points_back_ends_the_walk_with_an_error(after: int) -> None:
    # `iter_lots` asked the same page for ever.
    page = {"job_id": JOB_ID, "status": "processing", "lots": [lot_body("lot-3")],
            "pagination": {"limit": 1, "offset": 3, "total": 9, "has_more": True, "next_offset": after}}
    api = FakeApi().on(LOTS, httpx2.Response(200, json=page))
    client, _ = client_of(api)
    with pytest.raises(UnexpectedResponseError, match="next one"):
        list(islice(client.iter_lots(JOB_ID, offset=3), 10))  # bounded: it asked for ever
    assert len(api.received) == 1
