"""The stage's event publisher on Kafka."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lotlens_common.envelope import caused
from lotlens_common.producer import EventProducer
from lotlens_common.stage.ports import Caused


@dataclass(frozen=True)
class KafkaPublisher:
    """Publishes to the stage's topic and waits until Kafka has every event."""

    producer: EventProducer
    topic: str

    def publish(self, client_id: str, events: Sequence[Caused]) -> None:
        """Publish and flush."""
        if not events:
            return
        self.producer.publish_many(self.topic, (caused(event, client_id, cause)
                                                for cause, event in events))
        self.producer.flush()
