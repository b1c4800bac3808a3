"""What a PublishError tells of Kafka's refusal, on the real broker: a message refused for what it
is (refused again at every try) or a broker that does not take it (that clears): a stage holds
its new batches back for the second only (`producer.message_refused`)."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCancelled
from lotlens_common.producer import EventProducer, PublishError, message_refused
from lotlens_common.settings import KafkaSettings, ServiceSettings
from tests.conftest import new_id
from tests.servers import free_port

pytestmark = pytest.mark.integration


def _event() -> Envelope:
    return Envelope(event=JobCancelled(job_id=new_id("job-"), cancelled_at="2026-01-01T00:00:00Z"),
                    client_id="c")


def _topic_takes(settings: ServiceSettings, topic: str, max_bytes: int) -> None:
    """The broker refuses records over `max_bytes` on `topic` (MSG_SIZE_TOO_LARGE, at once)."""
    admin = AdminClient(settings.kafka.client_config())
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", str(max_bytes), incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def test_a_message_the_broker_refuses_for_its_size_is_refused_for_good(settings: ServiceSettings) -> None:
    _topic_takes(settings, settings.topics.vision, 100)
    producer = EventProducer(settings.kafka, new_id("refused-"))
    producer.publish(settings.topics.vision, _event())
    with pytest.raises(PublishError, match="MSG_SIZE_TOO_LARGE") as refused:
        producer.flush(10)
    assert message_refused(refused.value)


def test_a_message_no_broker_answers_is_not_refused_for_good() -> None:
    nowhere = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    producer = EventProducer(nowhere, new_id("unanswered-"))
    producer.publish("nowhere", _event())
    with pytest.raises(PublishError, match=r"^1 unacknowledged") as unanswered:
        producer.flush(0.5)
    assert not message_refused(unanswered.value)
