"""The producer against a slow broker: librdkafka's in-process mock cluster on 127.0.0.1, whose
every answer comes a round trip later."""

from __future__ import annotations

import os
from collections import Counter
from functools import partial

from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCancelled
from lotlens_common.producer import EventProducer, PublishError
from tests.conftest import new_id
from tests.mock_kafka import MockKafkaSettings

TOPIC = "events"


def _event(job_id: str) -> Envelope:
    return Envelope(event=JobCancelled(job_id=job_id, cancelled_at="2026-01-01T00:00:00Z"), client_id="c")


def _started(settings: MockKafkaSettings) -> EventProducer:
    """A producer whose broker has the topic and gave it its producer id (a few round trips)."""
    producer = EventProducer(settings, new_id("slow-"))
    producer.publish(TOPIC, _event("first"))
    producer.flush(10)
    return producer


def test_events_published_right_after_a_discard_are_in_kafka_or_the_flush_fails() -> None:
    # discard() purges asynchronously (the binding hands librdkafka `blocking=True` as its
    # NON_BLOCKING flag): events a caller published again a few ms after a failed flush were
    # purged too, a purge no flush counted as a failure, and the next flush returned with none of
    # them in Kafka. The broker thread, busy compressing, took the purge late.
    producer = _started(MockKafkaSettings(rtt_ms=100, compression_level=12))
    for _ in range(200):
        producer.publish_raw(TOPIC, b"chunk", os.urandom(100_000), [])
    assert producer.settle(0.3) > 0
    producer.discard()  # what a failed flush does
    outcomes: Counter[str] = Counter()
    for index in range(100):  # published again at once, as every caller does
        producer.publish(TOPIC, _event(f"again-{index}"), partial(outcomes.update, ["delivered"]),
                         lambda purged: outcomes.update(["purged" if purged else "failed"]))
    try:
        producer.flush(30)
    except PublishError:
        pass  # the caller knows: it sends them again
    else:
        assert outcomes == Counter(delivered=100)
    # None of them counts as dropped by a discard (the relay sends those again later, in order):
    # each is in Kafka or a failure.
    assert outcomes["purged"] == 0, outcomes
