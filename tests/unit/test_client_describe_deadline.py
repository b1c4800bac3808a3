"""`describe_lot` against a gateway that hangs or is still describing: its resends end by one
deadline (`deadline_s`, about one description's 300 s and a minute), and a 409 "in progress" is
waited out for as long as a description can take, never past that deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest

from lotlens_client import AsyncLotLensClient, LotLensClient, NetworkError, ValidationError
from lotlens_client.calls import DESCRIBE_DEADLINE_S
from tests.unit.client_support import (
    BASE,
    KEY,
    SUBMIT,
    FakeApi,
    FakeClock,
    clocked_client,
    error,
    lot_body,
    lots,
)

ROUTE = f"POST {SUBMIT}"
ANSWER = {"version": "1.0.0", "processing_mode": "synchronous", "total_lots": 1, "lots": [lot_body("lot-1")]}
IN_PROGRESS = error(409, "IDEMPOTENCY_KEY_IN_PROGRESS", "still being processed", headers={"Retry-After": "5"})


def read_timeout(request: httpx2.Request) -> float:
    return float(request.extensions["timeout"]["read"])


def hung(clock: FakeClock) -> Any:
    """A gateway that never answers: each request takes its whole read timeout, then times out."""
    def answer(request: httpx2.Request) -> httpx2.Response:
        clock.advance(read_timeout(request))
        raise httpx2.ReadTimeout("timed out", request=request)
    return answer


def test_resends_to_a_hung_gateway_end_by_the_deadline_not_after_four_full_timeouts() -> None:
    # Each attempt waited 310 s: 4 x 310 s + 7 s of pauses (1,247 s) blocked before NetworkError.
    api = FakeApi()
    client, clock = clocked_client(api)
    api.on(ROUTE, hung(clock))
    with pytest.raises(NetworkError) as raised:
        client.describe_lot(lots(1)[0], ["en"])
    assert clock.now <= DESCRIBE_DEADLINE_S
    assert len(api.received) >= 2, "a lost answer is still asked for again under the key"
    assert raised.value.details["idempotency_key"] == api.received[0].headers["Idempotency-Key"]


def test_a_shorter_deadline_is_kept_by_each_attempts_timeout() -> None:
    api = FakeApi()
    client, clock = clocked_client(api)
    api.on(ROUTE, hung(clock))
    with pytest.raises(NetworkError):
        client.describe_lot(lots(1)[0], ["en"], deadline_s=20)
    assert read_timeout(api.received[0]) == 20 and clock.now <= 20


def proxy_gives_up(clock: FakeClock, after_s: float) -> Any:
    """A proxy in front of the gateway that answers 504 (no API code) after `after_s`."""
    def answer(_request: httpx2.Request) -> httpx2.Response:
        clock.advance(after_s)
        return httpx2.Response(504, text="<html>Gateway Time-out</html>")
    return answer


def test_a_description_behind_a_60_s_proxy_is_waited_out_until_its_answer() -> None:
    # A 300 s description behind a proxy that gives up at 60 s: the resend met "in progress", and
    # after 3 x 5 s the SDK raised 409 IDEMPOTENCY_KEY_IN_PROGRESS although the answer was coming.
    api = FakeApi()
    client, clock = clocked_client(api)
    still_describing = [IN_PROGRESS] * 47  # 60 + 1 + 47 x 5 s: the answer is stored at about 300 s
    api.on(ROUTE, proxy_gives_up(clock, 60), *still_describing, httpx2.Response(200, json=ANSWER))
    lot = client.describe_lot(lots(1)[0], ["en"])
    assert lot.status == "completed" and len(api.received) == 49
    assert clock.slept == [1.0] + [5.0] * 47
    assert len({request.headers["Idempotency-Key"] for request in api.received}) == 1


def test_a_description_in_progress_for_ever_ends_at_the_deadline_naming_its_key() -> None:
    api = FakeApi()
    client, clock = clocked_client(api)
    api.on(ROUTE, proxy_gives_up(clock, 60), IN_PROGRESS)
    with pytest.raises(ValidationError, match="IDEMPOTENCY_KEY_IN_PROGRESS") as raised:
        client.describe_lot(lots(1)[0], ["en"], idempotency_key="lot-1-try")
    assert DESCRIBE_DEADLINE_S - 5 < clock.now <= DESCRIBE_DEADLINE_S
    assert raised.value.idempotency_key == "lot-1-try"


def test_a_submission_still_waits_out_in_progress_only_max_retries_times() -> None:
    # Unchanged for jobs: their write takes seconds, not minutes.
    api = FakeApi().on(ROUTE, IN_PROGRESS)
    client, clock = clocked_client(api)
    with pytest.raises(ValidationError, match="IDEMPOTENCY_KEY_IN_PROGRESS"):
        client.submit_job(lots(2), ["en"])
    assert clock.slept == [5.0, 5.0, 5.0]


def test_the_async_description_keeps_the_deadline_too() -> None:
    clock = FakeClock()
    api = FakeApi().on(ROUTE, hung(clock))

    async def sleep(seconds: float) -> None:
        clock.sleep(seconds)

    async def scenario() -> None:
        async with AsyncLotLensClient(BASE, KEY, transport=api.transport(), sleep=sleep,
                                      clock=clock.monotonic) as client:
            await client.describe_lot(lots(1)[0], ["en"])

    with pytest.raises(NetworkError):
        asyncio.run(scenario())
    assert clock.now <= DESCRIBE_DEADLINE_S and len(api.received) >= 2


BUSY = error(503, "SERVICE_UNAVAILABLE", "every intake slot is taken", headers={"Retry-After": "30"})


def describes_in(clock: FakeClock, took_s: float) -> Any:
    """A gateway that answers a description after `took_s`, or times out at the attempt's read timeout."""
    def answer(request: httpx2.Request) -> httpx2.Response:
        if read_timeout(request) < took_s:
            clock.advance(read_timeout(request))
            raise httpx2.ReadTimeout("timed out", request=request)
        clock.advance(took_s)
        return httpx2.Response(200, json=ANSWER)
    return answer


def test_a_description_started_after_two_busy_answers_still_gets_its_answer() -> None:
    # The deadline ran from the first 503: the description started at 60 s got 300 s, not 310 s,
    # and its answer at 302 s (a description that succeeded and was paid) became a NetworkError.
    api = FakeApi()
    client, clock = clocked_client(api)
    api.on(ROUTE, BUSY, BUSY, describes_in(clock, 302.0))
    lot = client.describe_lot(lots(1)[0], ["en"])
    assert lot.status == "completed" and len(api.received) == 3
    assert [read_timeout(request) for request in api.received] == [310.0, 310.0, 310.0]


def test_busy_answers_do_not_make_a_hung_gateway_hold_the_caller_longer_than_their_waits() -> None:
    api = FakeApi()
    client, clock = clocked_client(api)
    api.on(ROUTE, BUSY, BUSY, hung(clock))
    with pytest.raises(NetworkError):
        client.describe_lot(lots(1)[0], ["en"])
    assert clock.now <= 2 * 30 + DESCRIBE_DEADLINE_S


def test_a_wait_that_oversleeps_the_deadline_ends_in_the_last_answer_not_a_short_attempt() -> None:
    # Resends.timeout floored at 0.1 s past the deadline: a last attempt that could only time out,
    # and its NetworkError hid the 409 naming the key.
    api = FakeApi()
    clock = FakeClock()

    def oversleeps(seconds: float) -> None:
        clock.sleep(seconds + 4.5)  # a suspended laptop, a busy host

    client = LotLensClient(BASE, KEY, transport=api.transport(), sleep=oversleeps, clock=clock.monotonic)

    def in_progress(request: httpx2.Request) -> httpx2.Response:
        if read_timeout(request) < 1:  # shorter than a round trip: only a timeout comes back
            clock.advance(read_timeout(request))
            raise httpx2.ReadTimeout("timed out", request=request)
        return IN_PROGRESS

    api.on(ROUTE, proxy_gives_up(clock, 60), in_progress)
    with pytest.raises(ValidationError, match="IDEMPOTENCY_KEY_IN_PROGRESS") as raised:
        client.describe_lot(lots(1)[0], ["en"], idempotency_key="lot-1-try")
    assert raised.value.idempotency_key == "lot-1-try"
