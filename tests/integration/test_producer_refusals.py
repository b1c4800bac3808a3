"""What the stage's publisher tells of Kafka's refusal, on the real broker: an event refused for what
it is (refused again at every try, `EventsRefused`), or a broker that does not take it now (that
clears, a topic's size limit included): a stage holds its new batches back for the second only."""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCancelled, VisionBatchSubmitted
from lotlens_common.producer import EventProducer, PublishError, message_refused
from lotlens_common.settings import KafkaSettings, ServiceSettings
from lotlens_common.stage.adapters.kafka import KafkaPublisher
from lotlens_common.stage.ports import Caused, EventsRefused
from lotlens_common.topics import MAX_MESSAGE_BYTES
from tests.conftest import new_id
from tests.polling import wait_for
from tests.servers import free_port

pytestmark = pytest.mark.integration


def _event() -> Envelope:
    return Envelope(event=JobCancelled(job_id=new_id("job-"), cancelled_at="2026-01-01T00:00:00Z"),
                    client_id="c")


def _cancelled() -> Caused:
    return new_id("cause-"), JobCancelled(job_id=new_id("job-"), cancelled_at="2026-01-01T00:00:00Z")


def _topic_takes(settings: ServiceSettings, topic: str, max_bytes: int) -> None:
    """The broker refuses records over `max_bytes` on `topic` (MSG_SIZE_TOO_LARGE), from the moment
    it shows the setting: it answers the change before it applies it, and a record produced at once
    was sometimes taken."""
    admin = AdminClient(settings.kafka.client_config())
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", str(max_bytes), incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)
    wait_for(lambda: _max_message_bytes(admin, topic) == str(max_bytes),
             lambda: f"the topic to take {max_bytes} bytes (it takes {_max_message_bytes(admin, topic)})")


def _max_message_bytes(admin: AdminClient, topic: str) -> str | None:
    [future] = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
    entry = future.result(30).get("max.message.bytes")
    return None if entry is None else str(entry.value)


def test_a_topic_refusing_the_stages_event_for_its_size_is_no_refusal_for_good(
        settings: ServiceSettings) -> None:
    # Every event is kept under the producer's own limit, so the broker refusing one for its size
    # says the topic's `max.message.bytes` is below it (auto-created at the broker's default 1 MB
    # before the migrate Job ran): that clears once it is set back, as an ACL does, and the stage
    # holds its new batches meanwhile.
    _topic_takes(settings, settings.topics.vision, 100)
    publisher = KafkaPublisher(EventProducer(settings.kafka, new_id("refused-")), settings.topics.vision)
    with pytest.raises(PublishError, match="MSG_SIZE_TOO_LARGE") as refused:
        publisher.publish("c", [_cancelled()])
    assert not message_refused(refused.value)
    _topic_takes(settings, settings.topics.vision, MAX_MESSAGE_BYTES)  # what the migrate Job sets
    # The setting shown is not yet the partition leader's: a record sent at once may still meet 100.
    deadline = time.monotonic() + 30
    while True:
        try:
            publisher.publish("c", [_cancelled()])
            break
        except PublishError as exc:
            assert "MSG_SIZE_TOO_LARGE" in str(exc) and time.monotonic() < deadline, exc
            time.sleep(0.1)


def test_an_event_over_the_producers_own_limit_is_refused_for_good(settings: ServiceSettings) -> None:
    # `produce` refuses it before it is sent, at every try (the stage keeps every event under the
    # limit: a defect), however well the broker takes the others.
    publisher = KafkaPublisher(EventProducer(settings.kafka, new_id("refused-")), settings.topics.vision)
    lot_ids = tuple(f"lot-{i:016d}" for i in range(MAX_MESSAGE_BYTES // 20))
    too_large = VisionBatchSubmitted(job_id=new_id("job-"), shard_id="s", attempt=1, batch_id="b",
                                     lot_ids=lot_ids)
    with pytest.raises(EventsRefused, match="MSG_SIZE_TOO_LARGE"):
        publisher.publish("c", [("s b", too_large)])
    publisher.publish("c", [_cancelled()])


def test_a_message_no_broker_answers_is_not_refused_for_good() -> None:
    nowhere = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    producer = EventProducer(nowhere, new_id("unanswered-"))
    producer.publish("nowhere", _event())
    with pytest.raises(PublishError, match=r"^1 unacknowledged") as unanswered:
        producer.flush(0.5)
    assert not message_refused(unanswered.value)
