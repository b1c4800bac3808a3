"""Every event carries the CloudEvents Kafka binding headers, read back from a real topic by the
CloudEvents SDK (generic tooling that knows nothing of LotLens)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import orjson
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from confluent_kafka import KafkaException, Message
from sqlalchemy import Engine

from lotlens_common.envelope import Envelope, decode
from lotlens_common.events import JobCancelled
from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings, TopicSettings
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.outbox import Outbox
from lotlens_gateway.relay import Relay, RelaySettings
from tests.conftest import Infra, new_id
from tests.integration.result_store.support import read_topic
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def test_events_carry_cloudevents_headers_that_the_sdk_reads(infra: Infra, topics: TopicSettings) -> None:
    producer = EventProducer(KafkaSettings(bootstrap_servers=infra.kafka_bootstrap), "gateway")
    at = datetime(2026, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)
    envelope = Envelope(client_id="client-1", occurred_at=at, event=JobCancelled(
        job_id=new_id("job-"), cancelled_at=at))
    producer.publish(topics.submissions, envelope)
    producer.flush()

    [message] = read_topic(infra, topics.submissions)
    pairs = cast(list[tuple[str, bytes | None]], message.headers() or [])
    headers = {name: value for name, value in pairs if isinstance(value, bytes)}
    assert {"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type"} <= set(headers)
    event = from_binary(KafkaMessage(headers=headers, key=message.key(), value=message.value() or b""),
                        JSONFormat())
    assert event.get_specversion() == "1.0"
    assert event.get_id() == envelope.event_id
    assert event.get_source() == "/lotlens/gateway"
    assert event.get_type() == "lotlens.JobCancelled"
    assert event.get_time() == at
    assert event.get_subject() == envelope.job_id
    assert event.get_datacontenttype() == "application/json"
    assert event.get_dataschema() == "urn:lotlens:events:JobCancelled:v1"
    # The CloudEvent's data is the LotLens envelope itself, unchanged.
    assert event.get_data() == orjson.loads(message.value() or b"")
    assert decode(message.value() or b"") == envelope
    # LotLens's own header: subscribers (and LotLens's consumers) pass over types by it, unparsed.
    assert headers["type"] == b"JobCancelled"


def test_events_relayed_from_the_gateways_outbox_carry_the_same_headers(
        infra: Infra, topics: TopicSettings, engine: Engine) -> None:
    at = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    envelope = Envelope(client_id="client-1", occurred_at=at, event=JobCancelled(
        job_id=new_id("job-"), cancelled_at=at))
    kafka = KafkaSettings(bootstrap_servers=infra.kafka_bootstrap)
    metrics = GatewayMetrics()
    Outbox(engine, metrics, 1_000_000).append(topics.submissions, [envelope])
    relay = Relay(engine, EventProducer(kafka, "gateway"), [topics.submissions], RelaySettings(), metrics)
    relay.start()
    try:
        [message] = _when_published(infra, topics.submissions)
    finally:
        relay.stop()
    direct = EventProducer(kafka, "gateway")
    direct.publish(topics.completions, envelope)
    direct.flush()
    [reference] = _when_published(infra, topics.completions)
    assert message.headers() == reference.headers()
    assert dict(message.headers() or [])["ce_id"] == envelope.event_id.encode()


def _when_published(infra: Infra, topic: str, timeout_s: float = 30.0) -> list[Message]:
    """The topic's messages once there are any (the relay publishes in the background)."""
    return wait_for(lambda: _read_if_ready(infra, topic), f"a message on {topic}", timeout_s=timeout_s,
                    every_s=0.2)


def _read_if_ready(infra: Infra, topic: str) -> list[Message]:
    """The topic's messages; none while a just-created topic's leader is not known yet."""
    try:
        return read_topic(infra, topic)
    except KafkaException:
        return []
