"""The record topics keep their events for good, also topics created before that was decided."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType  # type: ignore[attr-defined]

from lotlens_common.settings import KafkaSettings, TopicSettings
from lotlens_common.topics import ensure_topics
from tests.conftest import Infra, delete_topics
from tests.polling import wait_for

pytestmark = pytest.mark.integration
FOURTEEN_DAYS = str(14 * 24 * 3600 * 1000)


@pytest.fixture()
def fresh_names(infra: Infra) -> Iterator[tuple[KafkaSettings, TopicSettings]]:
    """Topic names nobody created yet; deleted afterwards."""
    prefix = f"r{uuid.uuid4().hex[:10]}"
    topics = TopicSettings.model_validate({
        **{name: f"{prefix}.{name}" for name in
           ("submissions", "vision", "translation", "completions", "webhooks", "dead_letter")},
        "partitions": 1})
    kafka = KafkaSettings(bootstrap_servers=infra.kafka_bootstrap)
    yield kafka, topics
    delete_topics(kafka, topics.all_topics())


def _configs(kafka: KafkaSettings, names: list[str]) -> dict[str, dict[str, str]]:
    admin = AdminClient(kafka.client_config())
    deadline = time.monotonic() + 30
    while True:
        futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name) for name in names])
        try:
            return {resource.name: {key: entry.value for key, entry in future.result(10).items()}
                    for resource, future in futures.items()}
        except KafkaException:  # a topic created a moment ago is not known to every broker yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _assert_kept(kafka: KafkaSettings, topics: TopicSettings) -> None:
    # The controller answers an alter before the broker serving describe_configs has applied it
    # (KRaft's metadata log): a loaded CI run read the old retention a moment after the change.
    read: list[dict[str, dict[str, str]]] = []

    def kept() -> bool:
        read[:] = [_configs(kafka, topics.all_topics())]
        return all(read[0][name]["retention.ms"] == "-1" for name in topics.record_topics())

    wait_for(kept, lambda: f"every record topic's retention.ms at -1 (read: {read[0]})", timeout_s=15,
             every_s=0.2)
    [configs] = read
    for name in topics.record_topics():
        assert (configs[name]["retention.ms"], configs[name]["retention.bytes"]) == ("-1", "-1"), name
        assert configs[name]["cleanup.policy"] == "delete", name
    assert configs[topics.dead_letter]["retention.ms"] == FOURTEEN_DAYS


def test_new_record_topics_keep_events_for_good_and_the_dead_letters_expire(
        fresh_names: tuple[KafkaSettings, TopicSettings]) -> None:
    kafka, topics = fresh_names
    ensure_topics(kafka, topics)
    _assert_kept(kafka, topics)


def test_topics_created_with_a_fourteen_day_retention_are_changed_to_keep_events_for_good(
        fresh_names: tuple[KafkaSettings, TopicSettings]) -> None:
    kafka, topics = fresh_names
    # As the code before this change created them, plus a setting of an SRE's own.
    _create(kafka, topics, 1, {"retention.ms": FOURTEEN_DAYS, "segment.ms": "3600000"})
    assert _configs(kafka, [topics.submissions])[topics.submissions]["retention.ms"] == FOURTEEN_DAYS

    ensure_topics(kafka, topics)
    ensure_topics(kafka, topics)  # idempotent

    _assert_kept(kafka, topics)
    assert _configs(kafka, [topics.vision])[topics.vision]["segment.ms"] == "3600000"


def _hide_from_the_first_listing(monkeypatch: pytest.MonkeyPatch, names: list[str]) -> None:
    """Right after a create, a broker's metadata may not list the topics yet (a loaded CI run)."""
    listed, calls, ours = AdminClient.list_topics, [], set(names)

    def list_topics(self: AdminClient, *args: object, **kwargs: object) -> object:
        metadata = listed(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 1:  # the first listing only: metadata not caught up with the create
            metadata.topics = {name: t for name, t in metadata.topics.items() if name not in ours}
        return metadata

    monkeypatch.setattr(AdminClient, "list_topics", list_topics)


def _create(kafka: KafkaSettings, topics: TopicSettings, partitions: int, config: dict[str, str]) -> None:
    admin = AdminClient(kafka.client_config())
    for future in admin.create_topics([NewTopic(name, partitions, 1, config=config)
                                       for name in topics.all_topics()]).values():
        future.result(10)


def test_topics_the_listing_does_not_show_yet_are_configured_all_the_same(
        fresh_names: tuple[KafkaSettings, TopicSettings], monkeypatch: pytest.MonkeyPatch) -> None:
    # The create then answers "already exists", and the topic kept its 14-day retention.
    kafka, topics = fresh_names
    _create(kafka, topics, 1, {"retention.ms": FOURTEEN_DAYS})
    _hide_from_the_first_listing(monkeypatch, topics.all_topics())
    ensure_topics(kafka, topics)
    _assert_kept(kafka, topics)


def test_topics_the_listing_does_not_show_yet_are_grown_all_the_same(
        fresh_names: tuple[KafkaSettings, TopicSettings], monkeypatch: pytest.MonkeyPatch) -> None:
    # Topics of an older release, or auto-created, with fewer partitions: configured, not grown
    # (only listed topics were), and the wait for the partitions that did not exist failed the
    # migrate Job after 30 s.
    kafka, topics = fresh_names
    _create(kafka, topics, 1, {})
    _hide_from_the_first_listing(monkeypatch, topics.all_topics())
    grown = topics.model_copy(update={"partitions": 3})
    ensure_topics(kafka, grown)
    listed = AdminClient(kafka.client_config()).list_topics(timeout=10).topics
    assert {name: len(listed[name].partitions) for name in topics.all_topics()} == {
        name: 3 for name in topics.all_topics()}
