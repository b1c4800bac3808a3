"""The rate limiter against PostgreSQL: a sliding window, counted in batches, shared by every gateway
instance."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import OperationalError

from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import rate_limit_windows
from lotlens_gateway import ratelimit
from lotlens_gateway.errors import ApiError
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.ratelimit import FLUSH_EVERY, DueWrite, RateLimiter
from tests.conftest import new_id
from tests.integration.gateway_support import make_lots, running_gateway
from tests.network_guard import stub_resolver

NOW = datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)
WINDOW_END = datetime(2026, 11, 23, 12, 1, tzinfo=UTC)  # a minute's end: a fixed window's too


def instance(engine: Engine, limit: int) -> RateLimiter:
    return RateLimiter(engine, lambda mode: limit, 60, GatewayMetrics())


def shared_count(engine: Engine, client_id: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.sum(rate_limit_windows.c.count)).where(
            rate_limit_windows.c.client_id == client_id)).scalar_one())


def refusal(gateway: RateLimiter, client_id: str, mode: str, at: datetime) -> ApiError | None:
    """The 429 of one request at `at`, or None when it is accepted."""
    try:
        gateway.hit(client_id, mode, at)
    except ApiError as refused:
        assert refused.status == 429
        return refused
    return None


def accepted(gateway: RateLimiter, client_id: str, mode: str, times: Sequence[datetime]) -> list[datetime]:
    """Send one request at each of `times`; the times of those accepted."""
    return [at for at in times if refusal(gateway, client_id, mode, at) is None]


def busiest_minute(times: Sequence[datetime]) -> int:
    """The most of `times` in any 60 s span (one starting at one of them holds the most)."""
    return max(sum(start <= other < start + timedelta(seconds=60) for other in times) for start in times)


def busiest_minute_from_a_second(times: Sequence[datetime]) -> int:
    """The most of `times` in any 60 s span starting on a whole second."""
    first = min(times).replace(microsecond=0)
    starts = [first + timedelta(seconds=i) for i in range(int((max(times) - first).total_seconds()) + 1)]
    return max(sum(start <= other < start + timedelta(seconds=60) for other in times) for start in starts)


def test_one_instance_allows_exactly_the_limit(engine: Engine) -> None:
    client, gateway = new_id("client-"), instance(engine, 120)
    for _ in range(120):
        gateway.hit(client, "polling", NOW)
    with pytest.raises(ApiError) as refused:
        gateway.hit(client, "polling", NOW)
    assert refused.value.status == 429
    # A refused request is not counted: a client retrying on 429 would otherwise keep the last
    # minute full, and never get in.
    assert shared_count(engine, client) == 120


def test_a_window_boundary_does_not_let_a_client_send_twice_its_limit(engine: Engine) -> None:
    client, gateway = new_id("client-"), instance(engine, 100)
    just_before = [WINDOW_END - timedelta(seconds=1)] * 100
    just_after = [WINDOW_END + timedelta(seconds=1)] * 100
    assert len(accepted(gateway, client, "sync", just_before)) == 100
    # Fixed windows accepted these 100 too: 200 generations within 2 s under "100 a minute".
    assert accepted(gateway, client, "sync", just_after) == []


def steady_over_the_limit(limit: int) -> list[datetime]:
    """Four times the limit's rate for five minutes, at random moments."""
    draw = random.Random(7)
    start = WINDOW_END - timedelta(seconds=150)
    return sorted(start + timedelta(seconds=draw.uniform(0, 300)) for _ in range(limit * 4 * 5))


def burst_then_paced(limit: int) -> list[datetime]:
    """The limit in a window's last second, then one request per 60/limit s (the pattern that
    beats the "sliding window counter", which weighs the last window as if it were spread out)."""
    burst = [WINDOW_END - timedelta(seconds=0.5)] * limit
    return burst + [WINDOW_END + timedelta(seconds=60 * i / limit) for i in range(2 * limit)]


@pytest.mark.parametrize("pattern", [steady_over_the_limit, burst_then_paced])
def test_no_sixty_seconds_from_a_second_accept_more_than_the_limit(
        engine: Engine, pattern: Callable[[int], list[datetime]]) -> None:
    client, gateway = new_id("client-"), instance(engine, 40)
    times = accepted(gateway, client, "sync", pattern(40))
    # The second holding the moment a minute ago is dropped whole: a span starting within a second
    # may hold the limit plus what it holds of that second; one starting on a second, the limit.
    assert busiest_minute_from_a_second(times) <= 40
    assert busiest_minute(times) <= 40 + max(Counter(at.replace(microsecond=0) for at in times).values())
    if pattern is steady_over_the_limit:
        # Refusals are not counted, so a client sending too much still gets the limit through.
        assert len(times) >= 4 * 40


def test_a_client_keeping_to_the_limit_in_every_60_seconds_is_never_refused(engine: Engine) -> None:
    client, gateway = new_id("client-"), instance(engine, 30)
    times = [WINDOW_END + timedelta(seconds=60 * i / 30) for i in range(5 * 30)]
    assert accepted(gateway, client, "sync", times) == times


def test_retry_after_is_when_one_more_request_is_accepted(engine: Engine) -> None:
    client, gateway = new_id("client-"), instance(engine, 10)
    first = WINDOW_END - timedelta(seconds=20.5)
    assert len(accepted(gateway, client, "sync", [first + timedelta(seconds=3 * i) for i in range(10)])) == 10
    at = WINDOW_END + timedelta(seconds=9.5)
    refused = refusal(gateway, client, "sync", at)
    assert refused is not None
    # The first request's second leaves the last minute a minute after it started: WINDOW_END + 39 s.
    retry_after = int(refused.headers["Retry-After"])
    assert retry_after == 30 and refused.details is not None and refused.details["retry_after"] == 30
    assert refused.headers["X-RateLimit-Reset"] == str(int((WINDOW_END + timedelta(seconds=39)).timestamp()))
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refusal(gateway, client, "sync", at + timedelta(seconds=retry_after - 1)) is not None
    assert refusal(gateway, client, "sync", at + timedelta(seconds=retry_after)) is None


def test_through_the_api_a_window_boundary_does_not_double_the_limit(
        settings: ServiceSettings, engine: Engine) -> None:
    with running_gateway(settings, engine, rate_limit_polling=5) as gw:
        now = [WINDOW_END - timedelta(seconds=1)]
        gw.deps.clock = lambda: now[0]
        assert [gw.list_jobs().status_code for _ in range(6)] == [200] * 5 + [429]
        now[0] = WINDOW_END + timedelta(seconds=1)
        limited = gw.list_jobs()
        assert limited.status_code == 429 and limited.json()["code"] == "RATE_LIMIT_EXCEEDED"
        assert limited.headers["retry-after"] == "58"
        # The five of WINDOW_END - 1 s leave the last minute when their second does, at + 59 s.
        reset = WINDOW_END + timedelta(seconds=59)
        assert limited.headers["x-ratelimit-reset"] == str(int(reset.timestamp()))
        now[0] = reset
        assert gw.list_jobs().status_code == 200


def test_requests_are_written_in_batches_not_one_by_one(engine: Engine) -> None:
    client, gateway = new_id("client-"), instance(engine, 10_000)
    for _ in range(FLUSH_EVERY * 3):
        gateway.hit(client, "polling", NOW)
    # The first request is written at once, then every FLUSH_EVERY (or every FLUSH_S): the last
    # ones are still only counted in memory.
    assert 1 <= shared_count(engine, client) < FLUSH_EVERY * 3


def test_instances_share_the_limit(engine: Engine) -> None:
    client = new_id("client-")
    first, second = instance(engine, 100), instance(engine, 100)
    for _ in range(100):
        first.hit(client, "batch", NOW)
    with pytest.raises(ApiError):
        second.hit(client, "batch", NOW)
    assert shared_count(engine, client) == 100


def test_a_request_is_counted_in_memory_and_only_a_due_write_waits(engine: Engine) -> None:
    client, gateway = new_id("client-"), instance(engine, 10_000)
    first = gateway.count(client, "polling", NOW)
    assert first is not None  # a window's first request is written at once
    gateway.settle(first)
    dues = [gateway.count(client, "polling", NOW) for _ in range(FLUSH_EVERY - 1)]
    assert None in dues  # allowed without touching PostgreSQL
    assert shared_count(engine, client) == 1


def test_near_the_limit_every_request_waits_for_its_write_and_past_it_counting_refuses_at_once(
        engine: Engine) -> None:
    client, gateway = new_id("client-"), instance(engine, 3)
    for _ in range(3):
        due = gateway.count(client, "sync", NOW)
        if due is not None:
            gateway.settle(due)
    # The total written a moment ago holds the limit: nothing to write, nothing to take back.
    with pytest.raises(ApiError) as refused:
        gateway.count(client, "sync", NOW)
    assert refused.value.status == 429
    assert shared_count(engine, client) == 3


def test_through_the_api_a_client_pacing_at_exactly_the_limit_is_never_refused(
        settings: ServiceSettings, engine: Engine) -> None:
    # 10 a minute, one every 6 s (an integrator's batch pace): the request at + 60 s was refused,
    # the second holding the one at + 0 s still summed whole (11 requests).
    with running_gateway(settings, engine, rate_limit_polling=10) as gw:
        now = [WINDOW_END]
        gw.deps.clock = lambda: now[0]
        statuses = []
        for i in range(4 * 10):
            now[0] = WINDOW_END + timedelta(seconds=6 * i)
            statuses.append(gw.list_jobs().status_code)
        assert statuses == [200] * 40


@pytest.mark.parametrize("into_the_second", [0.0, 0.5, 0.999])
def test_through_the_api_retry_after_never_exceeds_the_window(
        settings: ServiceSettings, engine: Engine, into_the_second: float) -> None:
    with running_gateway(settings, engine, rate_limit_polling=3) as gw:
        burst = WINDOW_END + timedelta(seconds=into_the_second)
        gw.deps.clock = lambda: burst
        assert [gw.list_jobs().status_code for _ in range(4)] == [200] * 3 + [429]
        limited = gw.list_jobs()
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) <= 60
        assert limited.json()["details"]["retry_after"] <= 60


def rate_limit_statements(engine: Engine) -> tuple[list[str], Callable[..., None]]:
    """The statements on `rate_limit_windows` run from now on, and the listener to remove."""
    statements: list[str] = []

    def note(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "rate_limit_windows" in statement:
            statements.append(statement)
    event.listen(engine, "before_cursor_execute", note)
    return statements, note


def test_through_the_api_a_flood_past_the_limit_is_refused_without_touching_the_database(
        settings: ServiceSettings, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # The point is a total written moments ago: keep it fresh however slow this machine runs.
    monkeypatch.setattr(ratelimit, "FLUSH_S", 3600.0)
    with running_gateway(settings, engine, rate_limit_polling=5) as gw:
        gw.deps.clock = lambda: NOW
        assert [gw.list_jobs().status_code for _ in range(5)] == [200] * 5
        statements, note = rate_limit_statements(engine)
        try:
            refused = [gw.list_jobs() for _ in range(30)]
        finally:
            event.remove(engine, "before_cursor_execute", note)
        # Each refusal wrote its count, took it back and read the window: 3 statements, two
        # transactions, under the client's write lock in the thread pool.
        assert len(statements) <= 1, f"{len(statements)} statements for 30 refusals"
        assert {answer.status_code for answer in refused} == {429}
        # The five requests' second leaves the window 60 s after it started.
        assert {answer.headers["retry-after"] for answer in refused} == {"60"}


def test_requests_counted_while_a_write_is_in_flight_see_its_counts(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # The event loop counts while the thread pool writes. The counts taken into a write were in
    # neither the written total nor the unwritten counts until it returned, so the requests
    # counted meanwhile were allowed without a write: 100 accepted under a limit of 60.
    monkeypatch.setattr(ratelimit, "FLUSH_S", 3600.0)  # no write for time: only for counts
    client, gateway = new_id("client-"), instance(engine, 60)
    entered, release = threading.Event(), threading.Event()

    def held_write(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "INSERT INTO rate_limit_windows" in statement and client in str(_args):
            entered.set()
            release.wait(timeout=30)

    gateway.hit(client, "sync", NOW)
    accepted_now = 1
    settling: list[threading.Thread] = []
    outcomes: list[bool] = []

    def settle(due: DueWrite) -> None:
        try:
            gateway.settle(due)
        except ApiError:
            outcomes.append(False)
        else:
            outcomes.append(True)

    event.listen(engine, "before_cursor_execute", held_write)
    try:
        for _ in range(300):
            try:
                due = gateway.count(client, "sync", NOW)
            except ApiError:
                continue
            if due is None:
                accepted_now += 1
                continue
            settling.append(threading.Thread(target=settle, args=(due,)))
            settling[-1].start()
            if len(settling) == 1:
                assert entered.wait(timeout=30)  # the first due write is in flight
    finally:
        release.set()
        for thread in settling:
            thread.join(timeout=30)
        event.remove(engine, "before_cursor_execute", held_write)
    assert accepted_now + outcomes.count(True) == 60
    assert shared_count(engine, client) == 60


def test_requests_answered_503_while_postgresql_refuses_are_not_charged_afterwards(engine: Engine) -> None:
    # A failed write put every count it carried back, the failing request's own too: a client that
    # polled through an outage (each poll a 503) was charged for all of them once PostgreSQL came
    # back, and refused for a minute.
    client, gateway = new_id("client-"), instance(engine, 10)

    def refuse_writes(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "INSERT INTO rate_limit_windows" in statement and client in str(_args):
            raise OperationalError(statement, None, Exception("server closed the connection"))

    event.listen(engine, "before_cursor_execute", refuse_writes)
    try:
        for n in range(30):
            with pytest.raises(OperationalError):
                gateway.hit(client, "sync", NOW + timedelta(seconds=n * 0.1))
    finally:
        event.remove(engine, "before_cursor_execute", refuse_writes)
    later = NOW + timedelta(seconds=5)
    assert accepted(gateway, client, "sync", [later] * 10) == [later] * 10
    assert refusal(gateway, client, "sync", later) is not None


def test_retry_after_is_at_most_the_window_when_later_seconds_were_counted_first(engine: Engine) -> None:
    # A request counted at the end of a second is refused after ten counted in the next second were
    # written first (threads queue on one write lock; another instance's clock may run ahead): the
    # window reopens a fraction past a minute from it, and a Retry-After of 61 made clients that
    # trust the documented 60 give up.
    client, gateway = new_id("client-"), instance(engine, 10)
    late = NOW.replace(microsecond=999_000)
    next_second = [late + timedelta(seconds=0.01 * (n + 1)) for n in range(10)]
    assert len(accepted(gateway, client, "sync", next_second)) == 10
    refused = refusal(gateway, client, "sync", late)
    assert refused is not None and refused.headers["Retry-After"] == "60"


def test_through_the_api_jobs_refused_by_validation_count_so_a_client_repeating_one_is_held_to_its_limit(
        settings: ServiceSettings, engine: Engine) -> None:
    # Counting only valid jobs (tried, then undone) let a client repeat a refused 50,000-lot body
    # without end, each one validated and its webhook hosts resolved in the intake slot.
    with running_gateway(settings, engine, rate_limit_batch=2, allow_loopback_urls=False) as gw:
        asked: list[str] = []
        resolve = stub_resolver({"hooks.internal.example": "10.1.2.3"})

        async def counting(host: str, port: int) -> list[Any]:
            asked.append(host)
            return await resolve(host, port)

        gw.deps.resolve = counting
        private_hook = make_lots(2, webhook="https://hooks.internal.example/done")
        answers = [gw.submit(private_hook) for _ in range(5)]
        codes = [(answer.status_code, answer.json()["code"]) for answer in answers]
        assert codes == [(422, "INVALID_WEBHOOK_URLS")] * 2 + [(429, "RATE_LIMIT_EXCEEDED")] * 3, codes
        assert asked == ["hooks.internal.example"] * 2
