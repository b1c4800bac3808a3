"""Reading a test topic back, to check what a service published."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer

from lotlens_common.envelope import Envelope, decode


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
