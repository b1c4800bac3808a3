"""Strikes against an address: job bodies refused before authentication, counted per window."""

from __future__ import annotations

import pytest

from lotlens_gateway import strikes
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.strikes import AddressStrikes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_is_refused_from_its_limit_until_its_window_ends_and_others_are_not() -> None:
    clock, metrics = Clock(), GatewayMetrics()
    struck = AddressStrikes(limit=3, window_s=60, metrics=metrics, clock=clock)
    for _ in range(2):
        struck.record("203.0.113.7")
    assert struck.refusal("203.0.113.7") is None
    clock.now += 20
    struck.record("203.0.113.7")

    refusal = struck.refusal("203.0.113.7")
    assert refusal is not None
    assert (refusal.status, refusal.code) == (429, "RATE_LIMIT_EXCEEDED")
    # The window started at the first strike, 20 s ago: 40 s remain.
    assert refusal.headers == {"Retry-After": "40"}
    assert refusal.body()["details"] == {"reason": "failed_before_authentication", "limit": 3,
                                         "window_seconds": 60, "retry_after": 40}
    assert struck.refusal("203.0.113.8") is None
    assert metrics.registry.get_sample_value("lotlens_intake_struck_out_total") == 1

    clock.now += 39.5
    assert struck.refusal("203.0.113.7") is not None
    clock.now += 0.5
    assert struck.refusal("203.0.113.7") is None
    # A new window counts from nothing.
    struck.record("203.0.113.7")
    assert struck.refusal("203.0.113.7") is None


def test_a_limit_of_0_turns_it_off() -> None:
    struck = AddressStrikes(limit=0, window_s=60, metrics=GatewayMetrics(), clock=Clock())
    for _ in range(100):
        struck.record("203.0.113.7")
    assert struck.refusal("203.0.113.7") is None


def test_the_addresses_remembered_are_bounded_the_oldest_window_forgotten_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(strikes, "MAX_ADDRESSES", 3)
    clock = Clock()
    struck = AddressStrikes(limit=2, window_s=60, metrics=GatewayMetrics(), clock=clock)
    struck.record("198.51.100.1")
    clock.now += 30
    for _ in range(2):
        struck.record("203.0.113.7")
    struck.record("198.51.100.2")
    struck.record("198.51.100.3")
    assert sorted(struck._windows) == ["198.51.100.2", "198.51.100.3", "203.0.113.7"]
    assert struck.refusal("203.0.113.7") is not None
    for n in range(1000):
        struck.record(f"10.0.{n // 256}.{n % 256}")
    assert list(struck._windows) == ["10.0.3.229", "10.0.3.230", "10.0.3.231"]
