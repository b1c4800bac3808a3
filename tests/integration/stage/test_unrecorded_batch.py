"""The vision stage while the broker refuses its events: one batch it cannot record, no more, and
none lost or paid twice once the broker takes them again (PostgreSQL, Kafka, the stand-in)."""

from __future__ import annotations

import asyncio

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from sqlalchemy import Engine

from lotlens_common.events import VisionBatchSubmitted
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.runner import step
from lotlens_common.topics import MAX_MESSAGE_BYTES
from tests.conftest import new_id
from tests.integration.stage.helpers import (
    completed_lots,
    drive,
    job_events,
    runtime,
    submit_lots,
    vision_spec,
)
from tests.standin import Standin

ROUNDS = 4


def vision_topic_takes(settings: ServiceSettings, max_bytes: int) -> None:
    """The broker refuses records over `max_bytes` on the test's vision topic (MSG_SIZE_TOO_LARGE,
    at once: no event of the stage is that small), or takes them again."""
    admin = AdminClient(settings.kafka.client_config())
    resource = ConfigResource(ResourceType.TOPIC, settings.topics.vision, incremental_configs=[
        ConfigEntry("max.message.bytes", str(max_bytes), incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def test_while_the_broker_refuses_the_stages_events_one_batch_is_created_and_none_is_lost(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    jobs = [new_id("job-") for _ in range(ROUNDS)]
    vision_topic_takes(settings, 100)

    async def outage() -> None:
        async with runtime(settings, engine, standin) as rt:
            for job_id in jobs:  # a job's lots arrive at each round of the outage
                submit_lots(engine, job_id, ["a", "b"])
                await step(rt, watching=True)

    asyncio.run(outage())
    created = standin.stats()["batches_created"]
    assert created == 1, f"{created} batches created while the broker refused their records"

    vision_topic_takes(settings, MAX_MESSAGE_BYTES)
    for job_id in jobs:
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
