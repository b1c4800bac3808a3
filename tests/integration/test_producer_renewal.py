"""A producer whose messages make no progress while a broker answers is replaced, on the real broker."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCancelled
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.settings import KafkaSettings
from tests.conftest import Infra, fresh_topics, new_id
from tests.events import read_to_end
from tests.servers import free_port

pytestmark = pytest.mark.integration


def _renewals(client: str) -> float:
    return REGISTRY.get_sample_value("lotlens_kafka_producer_renewals_total", {"client": client}) or 0.0


def _event(job_id: str) -> Envelope:
    return Envelope(event=JobCancelled(job_id=job_id, cancelled_at="2026-01-01T00:00:00Z"),
                    client_id="c")


def test_two_flushes_without_progress_while_the_broker_answers_renew_the_producer(infra: Infra) -> None:
    client = new_id("renewed-")
    # Renewed after 0.8 s without progress: one 0.5 s flush is not enough, a second one is.
    producer = EventProducer(KafkaSettings(bootstrap_servers=infra.kafka_bootstrap, producer_stall_s=0.8),
                             client)
    with fresh_topics(infra) as topics:
        # A topic the broker does not have (auto-creation is off): like a partition without a
        # leader, the message waits in the producer and no delivery report comes.
        absent = new_id("absent-")
        producer.publish(absent, _event("stuck"))
        with pytest.raises(PublishError, match="1 unacknowledged"):
            producer.flush(0.5)
        assert _renewals(client) == 0  # one stalled flush: perhaps the broker just came back
        producer.publish(absent, _event("stuck"))  # as every caller does after a PublishError
        with pytest.raises(PublishError, match="1 unacknowledged"):
            producer.flush(0.5)
        assert _renewals(client) == 1
        producer.publish(topics.vision, _event("sent-again"))
        producer.flush()  # the stuck message is gone with the old producer
        assert _renewals(client) == 1
        assert [e.job_id for e in read_to_end(infra.kafka_bootstrap, topics.vision)] == ["sent-again"]


@pytest.mark.parametrize("short_wait_s", [0.0, 0.002])
def test_a_wait_too_short_to_ask_a_broker_between_stalled_flushes_does_not_reset_the_stall(
        infra: Infra, short_wait_s: float) -> None:
    # A wait too short to ask a broker (`settle(0)`, a relay round with almost no time left: its
    # check timed out before any round trip) knows nothing of a stall; counted as "no stall", it
    # kept a stalled producer alive between its long waits.
    client = new_id("polled-")
    producer = EventProducer(KafkaSettings(bootstrap_servers=infra.kafka_bootstrap, producer_stall_s=0.8),
                             client)
    absent = new_id("absent-")
    producer.publish(absent, _event("stuck"))
    with pytest.raises(PublishError, match="1 unacknowledged"):
        producer.flush(0.5)
    producer.publish(absent, _event("stuck"))
    assert producer.settle(short_wait_s) == 1
    with pytest.raises(PublishError, match="1 unacknowledged"):
        producer.flush(0.5)
    assert _renewals(client) == 1


def test_a_flush_while_no_broker_answers_keeps_the_producer_and_no_copy_of_what_is_sent_again() -> None:
    # Every caller publishes again after a PublishError; the copies left queued by each retry
    # (1, 2, 3, 4 unacknowledged) were all delivered once the broker was back.
    client = new_id("kept-")
    producer = EventProducer(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"), client)
    for _ in range(4):
        producer.publish("nowhere", _event("waits"))
        with pytest.raises(PublishError, match=r"^1 unacknowledged"):
            producer.flush(0.5)
    assert _renewals(client) == 0
