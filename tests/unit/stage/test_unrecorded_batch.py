"""While Kafka refuses the stage's BatchSubmitted, the one batch it could not record is the only
one it creates; once Kafka takes it again, that batch is adopted and the waiting jobs are sent
(in-memory ports)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from lotlens_common.producer import PublishError
from lotlens_common.stage.adapters.direct import DirectBatches
from lotlens_common.stage.core import lifecycle
from lotlens_common.stage.ports import Caused
from lotlens_common.stage.runner import run_stage_loop
from tests.unit.stage.conftest import World, lots
from tests.unit.stage.fakes import described

JOBS = 5


def kafka_refuses(world: World) -> Callable[[], None]:
    """Every publish of the stage is refused (an outage, an ACL, too few in-sync replicas) until
    the function returned is called."""

    def refused(client_id: str, events: Sequence[Caused]) -> None:
        raise PublishError("1 unacknowledged, 0 failed: [] (Kafka does not answer)")

    world.publisher.publish = refused  # type: ignore[method-assign]
    return partial(delattr, world.publisher, "publish")


def round_failures() -> float:
    return REGISTRY.get_sample_value("lotlens_stage_round_failures_total",
                                     {"stage": "vision", "step": "batches"}) or 0.0


def every_lot_sent_once_and_described(world: World, jobs: int) -> None:
    lot_ids = sorted(f"job-{job}-lot-{i}" for job in range(jobs) for i in range(2))
    in_batches = sorted(lot_id for event in world.submitted() for lot_id in event.lot_ids)
    assert in_batches == lot_ids, "each lot in one recorded batch"
    assert len(world.batches.batches) == len(world.submitted()) == jobs, "no batch paid for twice"
    assert world.completed() == lot_ids


def test_while_kafka_refuses_a_batchs_record_no_further_batch_is_created(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    # Each round went on to claim the next due job after the failed record, and created its batch
    # too: over an hour's outage the batches OpenAI ran (and billed) that no event told of grew
    # with every round and every job that arrived.
    kafka_accepts = kafka_refuses(world)
    failures_before = round_failures()
    with caplog.at_level(logging.ERROR, logger="lotlens_common.stage"):
        for job in range(JOBS):  # a job's lots arrive at each round of the outage
            world.store.add(lots(2, job_id=f"job-{job}"))
            world.rounds()
            world.housekeep()
    created = len(world.batches.batches)
    assert created == 1, f"{created} batches created while Kafka refused their records"
    # Recovery tries the held shard's batch at every watch (not once a minute, as a batch whose
    # create may still land), and each refusal is counted: LotLensStageRoundsFailing.
    assert round_failures() - failures_before == 2 * JOBS  # the record, then every later recovery
    holds = [r for r in caplog.records if "creates no batch until" in r.getMessage()]
    assert len(holds) == 1, "the hold is logged once, when it begins"

    kafka_accepts()
    world.rounds(3)
    every_lot_sent_once_and_described(world, JOBS)


def test_a_process_restarted_during_the_outage_adopts_the_batch_and_creates_none(world: World) -> None:
    # Killed (kill -9) while Kafka refused: the new process knows nothing of the refusal. Its loop
    # recovers the building shard before its first flush, so it meets the refusal on that batch
    # first, and holds new batches back as the killed one did.
    kafka_accepts = kafka_refuses(world)
    world.store.add(lots(2, job_id="job-0"))
    world.rounds()
    assert len(world.batches.batches) == 1 and world.store.shards("building")
    world.restart()
    world.store.add(lots(2, job_id="job-1"))
    loop_for(world, 1.0)  # the restarted process's loop, 5 ticks
    assert len(world.batches.batches) == 1, f"{len(world.batches.batches)} batches created"

    kafka_accepts()
    world.restart()
    loop_for(world, 1.0)
    every_lot_sent_once_and_described(world, 2)


def test_the_hold_ends_when_another_instance_records_the_batch(world: World) -> None:
    kafka_accepts = kafka_refuses(world)
    world.store.add(lots(2, job_id="job-0"))
    world.rounds()
    held = world.stage
    world.restart()  # another instance, whose recovery finds Kafka back
    kafka_accepts()
    world.housekeep()
    assert [event.job_id for event in world.submitted()] == ["job-0"]
    world.stage = held
    world.store.add(lots(2, job_id="job-1"))
    world.rounds(2)
    every_lot_sent_once_and_described(world, 2)


def test_the_hold_ends_when_no_batch_of_its_shard_is_found(world: World) -> None:
    # Its batch gone from the listing (direct mode's, kept on another replica's disk): held on, the
    # hold kept its shard, the one that could end it, from being built again, for good.
    kafka_accepts = kafka_refuses(world)
    world.store.add(lots(2, job_id="job-0"))
    world.rounds()
    [batch_id] = world.batches.batches
    world.batches.unlisted.add(batch_id)
    world.store.db_clock_ahead_s = lifecycle.CREATE_LANDS_S  # its create can no longer land
    kafka_accepts()
    world.store.add(lots(2, job_id="job-1"))
    world.rounds(2)
    del world.batches.batches[batch_id]  # never there, for this test's count
    every_lot_sent_once_and_described(world, 2)


def test_in_direct_mode_the_model_is_called_for_one_shard_while_kafka_refuses(
        world: World, tmp_path: Path) -> None:
    # Direct mode's "batch" is the model called for each lot at its create: every shard built in
    # the outage was paid for at once, and adopted from the folder later.
    calls: list[str] = []

    async def call(body: Mapping[str, Any]) -> dict[str, Any]:
        calls.append(body["input"][0]["content"][-1]["text"])
        return described(calls[-1], body)

    world.stage.batches = DirectBatches(call, 4, tmp_path)
    kafka_accepts = kafka_refuses(world)
    for job in range(3):
        world.store.add(lots(2, job_id=f"job-{job}"))
        world.rounds()
    assert len(calls) == 2, f"the model called for {len(calls)} lots while Kafka refused"
    kafka_accepts()
    world.rounds(2)
    assert len(calls) == 6 and len(world.submitted()) == 3
    assert world.completed() == sorted(f"job-{job}-lot-{i}" for job in range(3) for i in range(2))


def loop_for(world: World, seconds: float) -> None:
    """Run the stage's loop (`run_stage_loop`, as the service does) for `seconds`; it stops its
    stage for good, as at SIGTERM."""
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    run_stage_loop(world.stage, stop)
    timer.join()
