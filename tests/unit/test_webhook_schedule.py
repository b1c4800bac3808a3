"""The retry schedule: the contract's waits, jitter bounds, Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from lotlens_webhook_dispatcher.schedule import next_attempt_at, next_delay_s, parse_retry_after

CONTRACT = (30.0, 60.0, 120.0, 240.0)
NOW = datetime(2025, 8, 5, 8, 15, tzinfo=UTC)


def test_without_jitter_the_waits_are_the_contracts_30_60_120_240_seconds():
    assert [next_delay_s(n, CONTRACT, 0.0) for n in (1, 2, 3, 4)] == [30.0, 60.0, 120.0, 240.0]


def test_there_is_no_sixth_attempt_after_five_failures():
    assert next_delay_s(5, CONTRACT, 0.1) is None
    assert next_delay_s(0, CONTRACT, 0.1) is None


@pytest.mark.parametrize("attempts_made", [1, 2, 3, 4])
def test_jitter_stays_within_its_fraction_of_the_wait_and_actually_spreads(attempts_made):
    rng = random.Random(7)
    base = CONTRACT[attempts_made - 1]
    delays = [next_delay_s(attempts_made, CONTRACT, 0.1, rng=rng) for _ in range(2000)]
    assert all(d is not None and base * 0.9 <= d <= base * 1.1 for d in delays)
    values = [d for d in delays if d is not None]
    assert max(values) - min(values) > base * 0.15


def test_a_longer_retry_after_is_honoured_and_a_shorter_one_does_not_hurry_the_schedule():
    assert next_delay_s(1, CONTRACT, 0.0, retry_after_s=90) == 90
    assert next_delay_s(1, CONTRACT, 0.0, retry_after_s=5) == 30


def test_retry_after_is_capped_so_one_endpoint_cannot_park_a_delivery_for_days():
    assert next_delay_s(1, CONTRACT, 0.0, retry_after_s=86_400, retry_after_cap_s=3600) == 3600


def test_retry_after_is_read_as_seconds_or_as_an_http_date():
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after("Tue, 05 Aug 2025 08:17:00 GMT", NOW) == 120
    assert parse_retry_after("Tue, 05 Aug 2025 08:00:00 GMT", NOW) == 0


@pytest.mark.parametrize("value", ["Tue, 05 Aug 2025 08:17:00 GMT", "Tuesday, 05-Aug-25 08:17:00 GMT",
                                   "Tue Aug  5 08:17:00 2025"])
def test_retry_after_is_read_in_each_of_the_three_http_date_formats(value):
    # RFC 9110 5.6.7: a recipient MUST accept all three. asctime carries no zone (it is GMT by
    # definition), and the naive date it parses to was ignored.
    assert parse_retry_after(value, NOW) == 120


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5e3"])
def test_an_absent_or_unreadable_retry_after_is_ignored(value):
    assert parse_retry_after(value, NOW) is None


def test_the_next_attempt_is_due_the_delay_after_now():
    assert next_attempt_at(NOW, 30) == NOW + timedelta(seconds=30)
