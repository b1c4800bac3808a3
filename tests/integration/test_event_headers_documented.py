"""The AsyncAPI document (docs/asyncapi.json) declares every header a subscriber finds on a message
on the real broker: an event published with tracing on, and its copy an operator replays."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from lotlens_admin import dlq
from lotlens_admin.letters import DeadLetter
from lotlens_common import dead_letters as dl
from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCancelled
from lotlens_common.producer import EventProducer, Headers
from lotlens_common.settings import ServiceSettings
from tests.conftest import ROOT, new_id
from tests.spans import recording_spans

pytestmark = pytest.mark.integration


def _messages(settings: ServiceSettings, topic: str, count: int) -> list[Message]:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": new_id("read-")})
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(3)])
        found: list[Message] = []
        for _ in range(60):
            found += [m for m in consumer.consume(10, 1.0) if m.error() is None]
            if len(found) >= count:
                return found
        raise AssertionError(f"{len(found)} of {count} messages arrived")
    finally:
        consumer.close()


def test_every_header_on_a_published_event_and_its_replayed_copy_is_declared(
        settings: ServiceSettings) -> None:
    # The document declared the CloudEvents headers alone: a subscriber validating headers met
    # `traceparent` and `lotlens.replay.group` undeclared, and nothing told it what a replay is.
    job = new_id("job-")
    producer = EventProducer(settings.kafka, "gateway")
    with recording_spans():
        producer.publish(settings.topics.submissions, Envelope(
            event=JobCancelled(job_id=job, cancelled_at="2026-01-01T00:00:00Z"), client_id="c"))
        producer.flush()
    original = _messages(settings, settings.topics.submissions, 1)[0]
    headers: Headers = [(str(h[0]), h[1]) for h in original.headers() or []]
    dlq.replay(settings.kafka, settings.topics, [DeadLetter(
        position="0:0", group="lotlens-result-store", reason=dl.HANDLER_FAILED, error="boom",
        source=f"{settings.topics.submissions}:{original.partition()}:{original.offset()}",
        key=original.key(), value=original.value(), headers=headers)])

    on_the_wire = [{str(h[0]) for h in m.headers() or []}
                   for m in _messages(settings, settings.topics.submissions, 2)]
    document = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    declared = set(document["components"]["messages"]["JobCancelled"]["headers"]["properties"])
    assert {"traceparent", dl.REPLAY_GROUP} <= set().union(*on_the_wire), on_the_wire
    assert [names - declared for names in on_the_wire] == [set(), set()]
    assert dl.REPLAY_GROUP in document["info"]["description"], "the rules say nothing of replayed copies"
