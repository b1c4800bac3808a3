"""The stage's event publisher on Kafka."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from confluent_kafka import KafkaException

from lotlens_common.envelope import caused
from lotlens_common.producer import EventProducer, PublishError, message_refused
from lotlens_common.stage.ports import Caused, EventsRefused

# Event ids kept from chunks that failed; past this many (chunks no try of this process takes up
# again: another instance collected their shard) they are dropped, and a chunk is sent whole.
_KEPT_AT_MOST = 200_000


@dataclass(frozen=True)
class KafkaPublisher:
    """Publishes to the stage's topic and waits until Kafka has every event.

    A chunk whose flush failed is published again by the next try, all but the events Kafka
    acknowledged meanwhile (their ids are derived from what caused them, so a try knows them).
    Sent whole each time, a settlement that a throttled broker takes longer than a flush's wait
    never got through: its head was written once more at every try and its tail never.
    """

    producer: EventProducer
    topic: str
    _in_kafka: set[str] = field(default_factory=set, repr=False)

    def publish(self, client_id: str, events: Sequence[Caused]) -> None:
        """Publish and flush; `EventsRefused` for what Kafka refuses for good (`message_refused`)."""
        if not events:
            return
        if len(self._in_kafka) > _KEPT_AT_MOST:
            self._in_kafka.clear()
        envelopes = [caused(event, client_id, cause) for cause, event in events]
        try:
            for envelope in envelopes:
                if envelope.event_id not in self._in_kafka:
                    acknowledged = partial(self._in_kafka.add, envelope.event_id)
                    self.producer.publish(self.topic, envelope, acknowledged)
            self.producer.flush()
        except (KafkaException, PublishError) as exc:
            if message_refused(exc):
                raise EventsRefused(f"Kafka refuses these events for good: {exc}") from exc
            raise
        self._in_kafka.difference_update(envelope.event_id for envelope in envelopes)
