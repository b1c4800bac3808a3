"""Topic creation on the real broker: settings applied to new and existing topics, partitions grown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, ResourceType  # type: ignore[attr-defined]

from lotlens_common.settings import KafkaSettings, TopicSettings
from lotlens_common.topics import ensure_topics
from tests.conftest import Infra, delete_topics, fresh_topics, new_id
from tests.polling import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture()
def own_topics(infra: Infra) -> Iterator[tuple[KafkaSettings, TopicSettings]]:
    prefix = new_id("tt")
    names = {name: f"{prefix}.{name}" for name in
             ("submissions", "vision", "translation", "completions", "webhooks", "dead_letter")}
    kafka = KafkaSettings(bootstrap_servers=infra.kafka_bootstrap)
    settings = TopicSettings.model_validate({**names, "partitions": 2})
    yield kafka, settings
    delete_topics(kafka, settings.all_topics())


def test_existing_topics_get_more_partitions_and_the_durability_settings(
        own_topics: tuple[KafkaSettings, TopicSettings]) -> None:
    kafka, settings = own_topics
    admin = AdminClient(kafka.client_config())
    ensure_topics(kafka, settings)
    grown = settings.model_copy(update={"partitions": 4, "retention_ms": 3_600_000})
    ensure_topics(kafka, grown)
    ensure_topics(kafka, grown)  # idempotent
    metadata = admin.list_topics(timeout=10).topics
    assert {len(metadata[name].partitions) for name in settings.all_topics()} == {4}
    resource = ConfigResource(ResourceType.TOPIC, settings.dead_letter)  # the one topic with a retention
    # The broker applies a configuration change asynchronously: read it until it shows.
    def shown() -> Any:
        config = admin.describe_configs([resource])[resource].result(10)
        return config if config["retention.ms"].value == "3600000" else {}

    config = wait_for(shown, "the dead-letter topic's retention of 1 h", timeout_s=30, every_s=0.5)
    assert config["retention.ms"].value == "3600000"
    # Set on the topic itself, not inherited from the broker's default.
    assert config["min.insync.replicas"].value == "1"
    assert config["min.insync.replicas"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value

    # Fewer partitions than exist is left alone (Kafka cannot remove partitions).
    ensure_topics(kafka, settings)
    assert len(admin.list_topics(timeout=10).topics[settings.vision].partitions) == 4


def test_a_tests_own_topics_are_deleted_when_it_ends(infra: Infra) -> None:
    # They were not: the admin client was dropped before its request left. After a day of test
    # runs the broker held 20,000 partitions and died of "Too many open files".
    with fresh_topics(infra) as settings:
        names = set(settings.all_topics())
    admin = AdminClient({"bootstrap.servers": infra.kafka_bootstrap})

    def left() -> set[str]:
        return names & set(admin.list_topics(timeout=10).topics)

    wait_for(lambda: not left(), lambda: f"the test's topics deleted ({left()} left)", timeout_s=15,
             every_s=0.2)


def test_every_partition_is_served_as_soon_as_the_topics_are_ensured(infra: Infra) -> None:
    # CreateTopics answers before the broker serves the new partitions: the bench's first offset
    # query right after `migrate` failed with "Unknown partition" / "Not leader for partition".
    consumer = Consumer({"bootstrap.servers": infra.kafka_bootstrap, "group.id": new_id("probe-")})
    try:
        for _ in range(3):
            with fresh_topics(infra) as topics:  # ensure_topics, then the test's own use at once
                for topic in topics.all_topics():
                    for partition in range(topics.partitions):
                        consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        consumer.close()
