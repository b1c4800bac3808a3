"""The rate limiter against PostgreSQL: counted in batches, shared by every gateway instance."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select

from lotlens_common.tables import rate_limit_windows
from lotlens_gateway.errors import ApiError
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.ratelimit import FLUSH_EVERY, RateLimiter
from tests.conftest import new_id

NOW = datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)


def instance(engine: Engine, limit: int) -> RateLimiter:
    return RateLimiter(engine, lambda mode: limit, 60, GatewayMetrics())


def shared_count(engine: Engine, client_id: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(rate_limit_windows.c.count).where(
            rate_limit_windows.c.client_id == client_id)).scalar_one())


def test_one_instance_allows_exactly_the_limit(engine: Engine) -> None:
    client, gateway = new_id("client-"), instance(engine, 120)
    for _ in range(120):
        gateway.hit(client, "polling", NOW)
    with pytest.raises(ApiError) as refused:
        gateway.hit(client, "polling", NOW)
    assert refused.value.status == 429
    assert shared_count(engine, client) == 121  # the refused request counts too


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
    assert shared_count(engine, client) == 101


def test_a_request_is_counted_in_memory_and_only_a_due_write_waits(engine: Engine) -> None:
    client, gateway = new_id("client-"), instance(engine, 10_000)
    first = gateway.count(client, "polling", NOW)
    assert first is not None  # a window's first request is written at once
    gateway.settle(first)
    dues = [gateway.count(client, "polling", NOW) for _ in range(FLUSH_EVERY - 1)]
    assert None in dues  # allowed without touching PostgreSQL
    assert shared_count(engine, client) == 1


def test_near_the_limit_every_request_waits_for_its_write_and_settling_refuses_past_it(
        engine: Engine) -> None:
    client, gateway = new_id("client-"), instance(engine, 3)
    for _ in range(3):
        due = gateway.count(client, "sync", NOW)
        if due is not None:
            gateway.settle(due)
    past = gateway.count(client, "sync", NOW)
    assert past is not None
    with pytest.raises(ApiError) as refused:
        gateway.settle(past)
    assert refused.value.status == 429
    assert shared_count(engine, client) == 4
