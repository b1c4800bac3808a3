"""A producer whose messages make no progress while a broker answers is replaced, on the real broker."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import REGISTRY

from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.settings import KafkaSettings
from tests.conftest import Infra, fresh_topics, new_id
from tests.servers import free_port

pytestmark = pytest.mark.integration


def _renewals(client: str) -> float:
    return REGISTRY.get_sample_value("lotlens_kafka_producer_renewals_total", {"client": client}) or 0.0


def _values(bootstrap: str, topic: str, partitions: int) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": new_id("probe-"),
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        return [m.value() for m in consumer.consume(100, timeout=5) if m.error() is None]
    finally:
        consumer.close()


def test_two_flushes_without_progress_while_the_broker_answers_renew_the_producer(infra: Infra) -> None:
    client = new_id("renewed-")
    producer = EventProducer(KafkaSettings(bootstrap_servers=infra.kafka_bootstrap), client)
    with fresh_topics(infra) as topics:
        # A topic the broker does not have (auto-creation is off): like a partition without a
        # leader, the message waits in the producer and no delivery report comes.
        producer.publish_raw(new_id("absent-"), b"job", b"stuck", [])
        with pytest.raises(PublishError, match="1 unacknowledged"):
            producer.flush(0.5)
        assert _renewals(client) == 0  # one stalled flush: perhaps the broker just came back
        with pytest.raises(PublishError, match="1 unacknowledged"):
            producer.flush(0.5)
        assert _renewals(client) == 1
        producer.publish_raw(topics.vision, b"job", b"sent again", [])
        producer.flush()  # the stuck message is gone with the old producer
        assert _renewals(client) == 1
        assert _values(infra.kafka_bootstrap, topics.vision, topics.partitions) == [b"sent again"]


def test_a_flush_while_no_broker_answers_keeps_the_producer(infra: Infra) -> None:
    client = new_id("kept-")
    producer = EventProducer(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"), client)
    producer.publish_raw("nowhere", b"job", b"waits", [])
    for _ in range(3):
        with pytest.raises(PublishError, match="1 unacknowledged"):
            producer.flush(0.5)
    assert _renewals(client) == 0
    producer.discard()
