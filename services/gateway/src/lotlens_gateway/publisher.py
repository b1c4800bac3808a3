"""Publishing a request's events and waiting for Kafka's acknowledgement."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Protocol

from lotlens_common.envelope import Envelope


class EventSink(Protocol):
    """What the gateway needs from `lotlens_common.kafka.EventProducer`."""

    def publish_many(self, topic: str, envelopes: Iterable[Envelope]) -> None:
        """Queue events in order."""

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every acknowledgement; raise `PublishError` otherwise."""


class Publisher:
    """Publish-and-flush, one request at a time.

    The shared producer reports delivery failures for everything queued since the last flush;
    serialising requests makes those failures belong to the request that flushes them, so a
    201 is never answered for events Kafka rejected, nor a 503 for another request's failure.
    """

    def __init__(self, producer: EventSink, timeout_s: float) -> None:
        self._producer = producer
        self._timeout_s = timeout_s
        self._lock = threading.Lock()

    def publish(self, topic: str, envelopes: Iterable[Envelope]) -> None:
        """Queue the events and block until Kafka acknowledged all of them (blocking: use a thread)."""
        with self._lock:
            self._producer.publish_many(topic, envelopes)
            self._producer.flush(self._timeout_s)
