"""A collection cut short after some of its chunks were settled, on PostgreSQL, Kafka and the
stand-in: the lots announced and settled done are not the shard's any more, whatever becomes of
its batch after."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import Engine, select

from lotlens_common.events import LotFailed, VisionCompleted
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage import settle
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.runner import step
from lotlens_common.tables import stage_lots
from tests.conftest import new_id
from tests.integration.stage.helpers import (
    STAGE,
    drive,
    job_events,
    open_lots,
    runtime,
    submit_lots,
    vision_spec,
)
from tests.standin import Standin


class Crash(BaseException):
    """The process dies here."""


def test_lots_settled_before_a_crash_are_not_sent_again_when_the_batch_output_is_gone(
        settings: ServiceSettings, engine: Engine, standin: Standin, monkeypatch: pytest.MonkeyPatch) -> None:
    # Done lots were not written (closing the shard settles them): after a crash mid-collection
    # they still counted as the shard's, and when its output then answered 404 they were sent
    # again (paid twice), a second VisionCompleted after the first.
    job_id = new_id("job-")
    # Two chunks and more: a first one applied alone, the close taking the last three.
    submit_lots(engine, job_id, ["a", "b", "c", "d", "e"])
    monkeypatch.setattr(settle, "CHUNK", 2)  # as a 5,000-lot chunk of a bigger shard
    published: list[str] = []

    def die_at_the_second_chunk(name: str) -> None:
        published.append(name)
        if published.count("vision.after_results_published") == 2:
            raise Crash(name)

    async def scenario() -> None:
        async with runtime(settings, engine, standin) as first:
            monkeypatch.setattr(settle, "fault_point", die_at_the_second_chunk)
            with pytest.raises(Crash):
                for _ in range(100):
                    await step(first, watching=True)
                    await asyncio.sleep(0.1)
            monkeypatch.setattr(settle, "fault_point", lambda name: None)
            [shard] = first.store.shards("submitted")
            assert shard.batch_id is not None
            batch = await first.batches.retrieve_batch(shard.batch_id)
            await first.batches.delete_file(str(batch["output_file_id"]))  # gone, as from the dashboard
        # A deleted output answers 404 as one not readable yet does: it is waited for (briefly here).
        brief_wait = STAGE.model_copy(update={"output_wait_s": 1.0})
        async with runtime(settings, engine, standin, brief_wait) as restarted:
            for _ in range(100):
                await step(restarted, watching=True)
                if not open_lots(engine, "vision", job_id):
                    return
                await asyncio.sleep(0.1)

    asyncio.run(scenario())
    states = {state.lot_id: state for state in _lot_states(engine, job_id)}
    assert {state.status for state in states.values()} == {store.DONE}
    assert sorted(state.attempt for state in states.values()) == [1, 1, 2, 2, 2]  # the unsettled went again
    events = job_events(settings, settings.topics.vision, job_id, 10)
    completions = Counter(e.event.lot_id for e in events if isinstance(e.event, VisionCompleted))
    settled_first = [lot_id for lot_id, state in states.items() if state.attempt == 1]
    assert [completions[lot_id] for lot_id in settled_first] == [1, 1], completions
    assert not [e for e in events if isinstance(e.event, LotFailed)]
    assert standin.stats()["batches_created"] == 2


def test_a_shard_of_exactly_a_chunks_lots_is_settled_by_its_close_without_a_write_per_lot(
        settings: ServiceSettings, engine: Engine, standin: Standin, monkeypatch: pytest.MonkeyPatch) -> None:
    # The last lot filled the chunk, which was written lot by lot before the close that settles
    # its lots anyway: every lot of a 5,000-lot shard (the bench's), the last 5,000 of a 50,000-lot one.
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a", "b"])
    monkeypatch.setattr(settle, "CHUNK", 2)
    asyncio.run(drive(settings, engine, standin, vision_spec(settings), job_id))
    with engine.connect() as conn:
        written = conn.execute(select(stage_lots.c.status).where(
            stage_lots.c.stage == "vision", stage_lots.c.job_id == job_id)).scalars().all()
    assert {state.status for state in _lot_states(engine, job_id)} == {store.DONE}
    assert written == [store.WAITING, store.WAITING]  # in a collected shard: done
    events = job_events(settings, settings.topics.vision, job_id, 2)
    described = sorted(e.event.lot_id for e in events if isinstance(e.event, VisionCompleted))
    assert described == ["lot-0", "lot-1"]


def _lot_states(engine: Engine, job_id: str) -> list[store.LotState]:
    with engine.connect() as conn:
        return store.lot_states(conn, "vision", job_id)
