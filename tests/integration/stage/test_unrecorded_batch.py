"""The vision stage while Kafka does not answer it: one batch it cannot record, no more, and none
lost or paid twice once Kafka takes its events again (PostgreSQL, Kafka, the stand-in)."""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine

from lotlens_common.events import VisionBatchSubmitted
from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings, ServiceSettings
from lotlens_common.stage.runner import step
from tests.conftest import new_id
from tests.integration.stage.helpers import (
    completed_lots,
    drive,
    job_events,
    runtime,
    submit_lots,
    vision_spec,
)
from tests.servers import free_port
from tests.standin import Standin

ROUNDS = 4


class Unanswered(EventProducer):
    """The stage's producer while Kafka is down for it: no broker answers at its address. Each
    flush gives up after 1 s, not the service's 30 s: the refusal is the same, sooner."""

    def __init__(self) -> None:
        super().__init__(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"), new_id("unanswered-"))

    def flush(self, timeout_s: float = 1.0) -> None:
        """Wait 1 s unless told otherwise."""
        super().flush(timeout_s)


def test_while_kafka_does_not_answer_the_stage_one_batch_is_created_and_none_is_lost(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    jobs = [new_id("job-") for _ in range(ROUNDS)]

    async def outage() -> None:
        async with runtime(settings, engine, standin, producer=Unanswered()) as rt:
            for job_id in jobs:  # a job's lots arrive at each round of the outage
                submit_lots(engine, job_id, ["a", "b"])
                await step(rt, watching=True)

    asyncio.run(outage())
    created = standin.stats()["batches_created"]
    assert created == 1, f"{created} batches created while Kafka did not answer"

    for job_id in jobs:  # Kafka answers again: each process after the outage
        asyncio.run(drive(settings, engine, standin, vision_spec(settings), job_id))
    batches: dict[str, list[str]] = {}
    for job_id in jobs:
        events = job_events(settings, settings.topics.vision, job_id, 3)
        assert completed_lots(events) == ["lot-0", "lot-1"], job_id
        for envelope in events:
            if isinstance(envelope.event, VisionBatchSubmitted):
                batches[envelope.event.batch_id] = [*envelope.event.lot_ids]
    assert sorted(map(sorted, batches.values())) == [["lot-0", "lot-1"]] * ROUNDS  # each lot once
    assert standin.stats()["batches_created"] == len(batches) == ROUNDS  # none paid twice
