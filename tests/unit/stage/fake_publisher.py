"""An in-memory stand-in for the stage's publisher: it keeps what went out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lotlens_common.envelope import caused, encode
from lotlens_common.events import Event
from lotlens_common.stage.ports import Caused, EventsRefused
from lotlens_common.topics import MAX_MESSAGE_BYTES


@dataclass
class FakePublisher:
    """Keeps every event published; refuses one over Kafka's message size as `KafkaPublisher` does
    (the producer refuses it before sending)."""

    events: list[Event] = field(default_factory=list)

    def publish(self, client_id: str, events: Sequence[Caused]) -> None:
        for cause, event in events:
            if len(encode(caused(event, client_id, cause))) > MAX_MESSAGE_BYTES:
                raise EventsRefused(f"Kafka refuses these events for good: one over {MAX_MESSAGE_BYTES} B")
        self.events.extend(event for _, event in events)
