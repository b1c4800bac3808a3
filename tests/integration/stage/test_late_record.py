"""A builder whose shard lock died with its PostgreSQL session while it put its batch on record:
another instance's recovery adopts the batch, records and collects it, and the builder's record,
arriving late, must leave that shard alone (PostgreSQL, Kafka, the stand-in)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from sqlalchemy import Engine, select

from lotlens_common.events import VisionBatchSubmitted
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage import record, submit
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.recover import recover_building
from lotlens_common.stage.runner import step
from lotlens_common.stage.submit import flush_due
from lotlens_common.tables import stage_shards
from tests.conftest import new_id
from tests.integration.stage.helpers import (
    BUSY_S,
    end_session_holding,
    job_events,
    lot_statuses,
    runtime,
    submit_lots,
)
from tests.standin import Standin

pytestmark = pytest.mark.integration


def shards(engine: Engine, job_id: str) -> dict[str, str]:
    """The job's shards: id -> status."""
    with engine.begin() as conn:
        rows = conn.execute(select(stage_shards.c.shard_id, stage_shards.c.status)
                            .where(stage_shards.c.job_id == job_id))
        return {shard_id: status for shard_id, status in rows}


def another_instance_collects(settings: ServiceSettings, engine: Engine, standin: Standin,
                              job_id: str) -> None:
    """Another instance (its own loop, in a thread, as in its own process) recovers the building
    shard, puts its batch on record and collects it."""

    async def run() -> None:
        async with runtime(settings, engine, standin) as other:
            await recover_building(other)
            deadline = time.monotonic() + BUSY_S
            while list(shards(engine, job_id).values()) != ["collected"]:
                assert time.monotonic() < deadline, f"{shards(engine, job_id)} after {BUSY_S:.0f} s"
                await step(other, watching=True)
                await asyncio.sleep(0.1)

    thread = threading.Thread(target=asyncio.run, args=(run(),))
    thread.start()
    thread.join()


@pytest.mark.parametrize(("module", "point"), [(submit, "vision.after_batch_created"),
                                               (record, "vision.after_batch_published")])
def test_a_record_arriving_after_the_shard_was_collected_elsewhere_leaves_it_collected(
        settings: ServiceSettings, engine: Engine, standin: Standin, monkeypatch: pytest.MonkeyPatch,
        module: object, point: str) -> None:
    # The record's UPDATE had no `status = 'building'` guard: it set the collected shard back to
    # `submitted` (its lots no longer done), to be watched and collected again.
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a"])

    lost: list[str] = []

    def lock_lost_meanwhile(name: str) -> None:
        if name == point and not lost:  # the builder's; the other instance's goes through
            lost[:] = shards(engine, job_id)
            end_session_holding(engine, lost[0])  # a PostgreSQL restart, as far as the lock goes
            another_instance_collects(settings, engine, standin, job_id)

    monkeypatch.setattr(module, "fault_point", lock_lost_meanwhile)

    async def build() -> bool:
        async with runtime(settings, engine, standin) as builder:
            await flush_due(builder)
            return builder.held_shard is not None

    held = asyncio.run(build())
    assert list(shards(engine, job_id).values()) == ["collected"]
    assert lot_statuses(engine, "vision", job_id) == {"lot-0": store.DONE}
    assert not held, "nothing Kafka refused: no hold"
    events = job_events(settings, settings.topics.vision, job_id, 2)
    submitted = [e for e in events if isinstance(e.event, VisionBatchSubmitted)]
    assert len({e.event_id for e in submitted}) == 1, "one batch, one event id"
    # Published before the lock was lost, the builder's copy is out already; after, it is not sent.
    assert len(submitted) == (2 if point.endswith("published") else 1)
    assert standin.stats()["batches_created"] == 1

