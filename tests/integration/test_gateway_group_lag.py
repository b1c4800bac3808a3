"""Every LotLens consumer group's lag and members on the gateway's operations port, read from the
broker: a group none of whose instances runs still shows how far behind it is."""

from __future__ import annotations

import httpx2
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from lotlens_common.settings import KafkaSettings, ServiceSettings
from lotlens_gateway.config import CONSUMER_GROUPS
from tests.conftest import new_id
from tests.integration.gateway_support import running_gateway

pytestmark = pytest.mark.integration


def samples(metrics_text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric, by their sorted labels."""
    return {tuple(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(metrics_text)
            for sample in family.samples if sample.name == name}


def test_the_lag_of_a_group_with_no_running_instance_is_on_the_gateways_metrics(
        settings: ServiceSettings, engine: Engine) -> None:
    prefix = new_id("lag-") + "."
    stopped = prefix + "lotlens-translator"
    topic = settings.topics.vision
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for n in range(7):
        producer.produce(topic, value=f"event {n}".encode(), partition=0)
    assert producer.flush(30) == 0
    # The translator read 2 of the 7 events, committed, and stopped: no member, no lag monitor.
    reader = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": stopped,
                       "enable.auto.commit": False})
    reader.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    reader.close()

    kafka = KafkaSettings(bootstrap_servers=settings.kafka.bootstrap_servers, group_prefix=prefix)
    with running_gateway(settings, engine, kafka=kafka) as gw:
        text = httpx2.get(f"{gw.ops_url}/metrics", timeout=30).text

    lag = samples(text, "lotlens_kafka_group_lag_messages")
    assert lag.get((("group", stopped), ("topic", topic))) == 5, lag
    members = samples(text, "lotlens_kafka_group_members")
    assert members == {(("group", prefix + group),): 0 for group in CONSUMER_GROUPS}, members
    assert samples(text, "lotlens_kafka_group_lag_read") == {(): 1}


def test_a_broker_the_gateway_cannot_read_says_so_instead_of_leaving_the_lag_out_unseen(
        settings: ServiceSettings, engine: Engine) -> None:
    # The lag and member series are left out when the broker does not answer (no stale figures):
    # the alerts on them then saw nothing and went quiet. A gauge says whether the read worked,
    # for an alert of its own (LotLensConsumerLagUnread).
    with running_gateway(settings, engine, kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9")) as gw:
        text = httpx2.get(f"{gw.ops_url}/metrics", timeout=60).text
    assert samples(text, "lotlens_kafka_group_members") == {}
    assert samples(text, "lotlens_kafka_group_lag_read") == {(): 0}
