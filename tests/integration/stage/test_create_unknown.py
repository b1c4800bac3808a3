"""A create answered 5xx may have made its batch, on PostgreSQL, Kafka and the stand-in: no
instance builds the shard again before a listing would show that batch, nor once its job is
cancelled."""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine, text

from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.core.lifecycle import CREATE_LANDS_S
from lotlens_common.stage.runner import step
from tests.conftest import new_id
from tests.integration.stage.helpers import lot_statuses, open_lots, runtime, submit_lots
from tests.standin import Standin


def _create_wait_passes(engine: Engine) -> None:
    """The wait for a create's batch to land goes by: the moment it was asked moves back as much."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE stage_shards SET create_asked_at = create_asked_at - make_interval("
                          "secs => :s) WHERE create_asked_at IS NOT NULL"), {"s": CREATE_LANDS_S})


def test_a_shard_whose_create_answered_5xx_waits_for_its_batch_in_every_instance_then_is_built(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # The next watch's recovery listed no batch yet and built a second one; when the first landed
    # the reconciler cancelled it, and OpenAI billed what it had run.
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a", "b"])
    standin.faults(api_faults=[{"scope": "batches", "method": "POST", "kind": "server_error"}])

    async def scenario() -> None:
        async with runtime(settings, engine, standin) as first:
            await step(first, watching=True)
        async with runtime(settings, engine, standin) as restarted:
            for _ in range(3):
                await step(restarted, watching=True)
            assert standin.stats()["batches_created"] == 0, "built again while its batch may land"
            _create_wait_passes(engine)
            for _ in range(50):
                await step(restarted, watching=True)
                if not open_lots(engine, "vision", job_id):
                    return
                await asyncio.sleep(0.1)

    asyncio.run(scenario())
    assert open_lots(engine, "vision", job_id) == []
    assert standin.stats()["batches_created"] == 1


def test_a_shard_whose_job_was_cancelled_after_its_create_failed_makes_no_batch(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # Recovery built it again once the wait passed: the batch was created, then cancelled at the
    # next watch, and OpenAI billed what it had run meanwhile.
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a", "b"])
    standin.faults(api_faults=[{"scope": "batches", "method": "POST", "kind": "server_error"}])

    async def scenario() -> None:
        async with runtime(settings, engine, standin) as rt:
            await step(rt, watching=True)
            with engine.begin() as conn:
                store.cancel_job(conn, "vision", job_id)
            _create_wait_passes(engine)
            for _ in range(2):
                await step(rt, watching=True)

    asyncio.run(scenario())
    assert standin.stats()["batches_created"] == 0
    assert lot_statuses(engine, "vision", job_id) == {"lot-0": store.CANCELLED, "lot-1": store.CANCELLED}
    with engine.connect() as conn:
        shards = conn.execute(text("SELECT status FROM stage_shards WHERE job_id = :j"), {"j": job_id})
        assert shards.scalars().all() == ["empty"]
