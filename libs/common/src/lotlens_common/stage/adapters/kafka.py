"""The stage's event publisher on Kafka."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lotlens_common.envelope import Envelope
from lotlens_common.events import Event
from lotlens_common.kafka import EventProducer


@dataclass(frozen=True)
class KafkaPublisher:
    """Publishes to the stage's topic and waits until Kafka has every event."""

    producer: EventProducer
    topic: str

    def publish(self, client_id: str, events: Sequence[Event]) -> None:
        """Publish and flush."""
        if not events:
            return
        self.producer.publish_many(self.topic, (Envelope(event=event, client_id=client_id)
                                                for event in events))
        self.producer.flush()
