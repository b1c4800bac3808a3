"""Reading a test topic back, or recording what a producer would send, to check what a service published."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from lotlens_common.envelope import Envelope, decode
from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings


def read_events(bootstrap: str, topic: str, until: Callable[[list[Envelope]], bool],
                timeout_s: float = 30.0) -> list[Envelope]:
    """Every event on a topic from the start, until `until(events)` holds or the time is up."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    events: list[Envelope] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(events) and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.2):
                if message.error() is None:
                    events.append(decode(message.value() or b""))
    finally:
        consumer.close()
    return events


def read_to_end(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Envelope]:
    """Every event on a topic, up to its end as it is now (nothing published before is missed)."""
    return [decode(message.value() or b"") for message in read_messages_to_end(bootstrap, topic, timeout_s)]


def read_messages_to_end(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Message]:
    """Every message on a topic as Kafka hands it out (key, headers, partition), up to its end as
    it is now, in each partition's order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    messages: list[Message] = []
    try:
        partitions = consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
                for p in partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p, end in ends.items() if end])
        left = {p for p, end in ends.items() if end}
        deadline = time.monotonic() + timeout_s
        while left and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.2):
                if message.error() is None:
                    messages.append(message)
                    if (message.offset() or 0) + 1 >= ends[message.partition() or 0]:
                        left.discard(message.partition() or 0)
        assert not left, f"partitions {left} of {topic} not read to their end"
    finally:
        consumer.close()
    return messages


class RecordingProducer(EventProducer):
    """The real producer's envelope and header handling; what it would send is kept here, and
    acknowledged at once."""

    def __init__(self) -> None:
        super().__init__(KafkaSettings(bootstrap_servers="127.0.0.1:1"), "test")
        self.sent: list[tuple[str, bytes | None, dict[str, Any]]] = []

    def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, str | bytes | None]], delivered: Callable[[], None] | None = None,
                 failed: object = None) -> None:
        self.sent.append((topic, value, dict(headers)))
        if delivered is not None:
            delivered()


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """Offsets `group` has committed on `topic`, summed over its partitions."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = reader.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in found)
    finally:
        reader.close()
