"""The stage's dependencies in one place, handed to the submit and collect steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from lotlens_common.envelope import Envelope
from lotlens_common.events import Event
from lotlens_common.kafka import EventProducer
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.ports import BatchesPort, DirectCall
from lotlens_common.stage.spec import StageSpec


@dataclass(frozen=True)
class StageRuntime:
    """Engine, producer, Batch API and the stage's rules."""

    engine: Engine
    producer: EventProducer
    batches: BatchesPort
    spec: StageSpec
    settings: StageSettings
    # Set in direct mode: requests go one by one instead of through the Batch API.
    direct: DirectCall | None = None

    def publish_events(self, client_id: str, events: Sequence[Event]) -> None:
        """Publish events to the stage's topic and wait until Kafka has them."""
        if not events:
            return
        self.producer.publish_many(self.spec.output_topic(),
                                   (Envelope(event=event, client_id=client_id) for event in events))
        self.producer.flush()
