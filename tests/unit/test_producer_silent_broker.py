"""A caller's wait for Kafka ends when it asked, also against a broker that never answers (librdkafka's
in-process mock cluster on 127.0.0.1, every answer a minute away): the gateway's shutdown grace
holds its flushes only as long as each takes what it was given."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCancelled
from lotlens_common.producer import EventProducer, PublishError
from tests.conftest import new_id
from tests.mock_kafka import MockKafkaSettings

# Scheduling noise on a shared 2-core machine, far below the 2 s metadata request once added.
NOISE_S = 0.5


def _event(job_id: str) -> Envelope:
    return Envelope(event=JobCancelled(job_id=job_id, cancelled_at="2026-01-01T00:00:00Z"), client_id="c")


@pytest.fixture
def silent() -> Iterator[EventProducer]:
    producer = EventProducer(MockKafkaSettings(rtt_ms=60_000), new_id("silent-"))
    yield producer
    producer.discard()


def test_a_flush_against_a_silent_broker_fails_within_its_timeout(silent: EventProducer) -> None:
    for _ in range(2):  # the second wait without progress is the one a stall could renew
        silent.publish("events", _event("waits"))
        started = time.monotonic()
        with pytest.raises(PublishError, match="1 unacknowledged"):
            silent.flush(1.0)
        waited = time.monotonic() - started
        assert waited < 1.0 + NOISE_S, f"a 1 s flush took {waited:.1f} s"


def test_a_settle_against_a_silent_broker_returns_within_its_timeout(silent: EventProducer) -> None:
    silent.publish("events", _event("waits"))
    for _ in range(2):
        started = time.monotonic()
        assert silent.settle(1.0) == 1
        waited = time.monotonic() - started
        assert waited < 1.0 + NOISE_S, f"a 1 s settle took {waited:.1f} s"
