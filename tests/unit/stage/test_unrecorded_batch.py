"""While Kafka refuses the stage's BatchSubmitted, the one batch it could not record is the only
one it creates; once Kafka takes it again, that batch is adopted and the waiting jobs are sent. An
event Kafka refuses for what it is holds nothing back (in-memory ports)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError
from prometheus_client import REGISTRY

from lotlens_common.events import VisionBatchSubmitted
from lotlens_common.images import ImageCheck
from lotlens_common.model.errors import ModelUnavailableError, ModelUnreachableError
from lotlens_common.producer import PublishError
from lotlens_common.stage.adapters.direct import DirectBatches
from lotlens_common.stage.core import lifecycle
from lotlens_common.stage.ports import Caused, EventsRefused
from lotlens_common.stage.quota import QUOTA_FIRST_WAIT_S
from lotlens_common.stage.runner import run_stage_loop
from lotlens_common.stage.submit import flush_due
from lotlens_vision_batcher.vision_stage import VisionStage
from tests.polling import wait_for
from tests.unit.stage.conftest import World, dead_images_unreachable, lots
from tests.unit.stage.fakes import described
from tests.unit.stage.test_quota_pause import quota_refusal

JOBS = 5


def kafka_refuses(world: World, refusal: Callable[[], Exception] | None = None) -> Callable[[], None]:
    """Every publish of the stage is refused (an outage, an ACL, too few in-sync replicas: `refusal`)
    until the function returned is called."""

    def refused(client_id: str, events: Sequence[Caused]) -> None:
        if refusal is not None:
            raise refusal()
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


def test_while_the_topic_refuses_the_records_for_their_size_no_further_batch_is_created(world: World) -> None:
    # Every event is kept under the producer's own limit (`rule.RECORDED_LOT_ID_BYTES`): the broker
    # refusing one for its size says the topic's `max.message.bytes` is set below it (auto-created
    # at the broker's default 1 MB before the migrate Job ran), which clears once it is set back.
    # Taken for a refusal for good, it held nothing: a batch created and not recorded each round.
    kafka_accepts = kafka_refuses(world, lambda: PublishError(
        "0 unacknowledged, 1 failed: ['Broker: Message size too large']", 0,
        [KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)]))
    for job in range(3):
        world.store.add(lots(2, job_id=f"job-{job}"))
        world.rounds()
    created = len(world.batches.batches)
    assert created == 1, f"{created} batches created while the topic refused their records"

    kafka_accepts()  # the migrate Job set the topic's max.message.bytes back
    world.rounds(3)
    every_lot_sent_once_and_described(world, 3)


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
    flushes = flushes_counted(world)
    loop_until(world, lambda: len(flushes) >= 2)  # its first round (housekeeping, then a step) went round
    assert len(world.batches.batches) == 1, f"{len(world.batches.batches)} batches created"

    kafka_accepts()
    world.restart()
    loop_until(world, lambda: len(world.completed()) == 4)
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


def flushes_counted(world: World) -> list[bool]:
    """One entry for each `flush_due` of the stage from now on (each reads the waiting jobs first)."""
    flushes: list[bool] = []
    waiting_jobs = world.store.waiting_jobs

    def counted(cancelled_only: bool = False) -> list[Any]:
        flushes.append(cancelled_only)
        return waiting_jobs(cancelled_only)

    world.store.waiting_jobs = counted  # type: ignore[method-assign]
    return flushes


def loop_until(world: World, done: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Run the stage's loop (`run_stage_loop`, as the service does) until `done()`, looked at apart
    from it, not for a time: 1 s of a loaded machine was not always the loop's first round. It
    stops its stage for good, as at SIGTERM."""
    stop = threading.Event()
    loop = threading.Thread(target=run_stage_loop, args=(world.stage, stop))
    loop.start()
    try:
        wait_for(lambda: done() or not loop.is_alive(), "the loop to be done", timeout_s=timeout_s,
                 every_s=0.01)
    finally:
        stop.set()
        loop.join()
    assert done(), "the loop ended before it was done"


def test_a_batch_held_off_the_record_in_a_quota_pause_is_recorded_and_the_pause_tried_once_both_are_back(
        world: World) -> None:
    # While the process knew of a quota pause, recovery asked for the pause's try before listing
    # each building shard; with the hold set no try could be taken (`may_build`), and recovery
    # stopped before the held shard: the hold waited for a record, the pause for a create, and
    # nothing was sent again until a restart.
    kafka_accepts = kafka_refuses(world)
    world.store.add(lots(2, job_id="job-0"))
    world.rounds()  # job-0's batch created, not on record
    world.restart()  # a new process, which knows nothing of it
    world.store.add(lots(2, job_id="job-1"))
    world.batches.errors["create"] = [quota_refusal()]
    asyncio.run(flush_due(world.stage))  # job-1's create refused: the quota pause begins
    world.store.clock += QUOTA_FIRST_WAIT_S
    world.rounds()  # the try's recovery finds job-0's batch; Kafka refuses its record: held too
    assert world.store.quota_pause() is not None and len(world.store.shards("building")) == 2
    kafka_accepts()  # Kafka and the billing are back
    world.rounds()  # job-0's batch recorded, then job-1's shard built with the try (given back)
    assert world.store.quota_pause() is None, "the quota pause ended"
    every_lot_sent_once_and_described(world, 2)


def test_while_held_no_other_building_shard_is_listed_at_openai(world: World) -> None:
    # None of them could be built or recorded while held, yet each was looked for at OpenAI (up to
    # 50 pages of the listing) at every watch.
    world.store.add(lots(1, job_id="job-1"))
    world.store.add(lots(1, job_id="job-2"))
    world.batches.errors["upload"] = [ModelUnavailableError("HTTP 502") for _ in range(2)]
    asyncio.run(flush_due(world.stage))  # both uploads failed: two building shards with no batch
    kafka_refuses(world)
    world.store.add(lots(1, job_id="job-0"))
    asyncio.run(flush_due(world.stage))  # job-0's batch created, not on record: held
    world.batches.pages_listed = 0
    world.rounds(3)
    assert world.batches.pages_listed == 3, "the held shard's batch looked for, once a watch"
    assert len(world.batches.batches) == 1


def refuses_the_record_of(world: World, job_id: str, refusal: Callable[[], Exception]) -> None:
    """Kafka refuses the job's BatchSubmitted with `refusal()`, and takes every other event."""
    publish = world.publisher.publish

    def refusing(client_id: str, events: Sequence[Caused]) -> None:
        if any(isinstance(event, VisionBatchSubmitted) and event.job_id == job_id for _, event in events):
            raise refusal()
        publish(client_id, events)

    world.publisher.publish = refusing  # type: ignore[method-assign]


def refused_for_good() -> Exception:
    """What the publisher raises for an event over the producer's size limit, or an invalid record."""
    return EventsRefused("Kafka refuses these events for good: MSG_SIZE_TOO_LARGE")


def test_a_record_refused_for_the_event_itself_holds_no_other_batch_back(world: World) -> None:
    # Refused for what it is (its size, an invalid record), the event is refused at every try,
    # however well Kafka takes the others: every replica's recovery adopted its batch, failed and
    # held for good, and no command reached the hold.
    refuses_the_record_of(world, "job-0", refused_for_good)
    world.store.add(lots(2, job_id="job-0"))
    world.rounds()
    for job in (1, 2):
        world.store.add(lots(2, job_id=f"job-{job}"))
        world.rounds(2)
        world.housekeep()
    assert world.completed() == sorted(f"job-{job}-lot-{i}" for job in (1, 2) for i in range(2))
    assert [s.job_id for s in world.store.shards("building")] == ["job-0"]  # failing at each watch
    assert len(world.batches.batches) == 3  # job-0's adopted at each try, never built again


def test_the_hold_ends_when_its_record_is_refused_for_the_event_itself(world: World) -> None:
    # Held while Kafka did not answer; back, it refuses that one event for good.
    kafka_accepts = kafka_refuses(world)
    world.store.add(lots(2, job_id="job-0"))
    world.rounds()
    kafka_accepts()
    refuses_the_record_of(world, "job-0", refused_for_good)
    world.store.add(lots(2, job_id="job-1"))
    world.rounds(2)
    assert world.completed() == ["job-1-lot-0", "job-1-lot-1"]


def test_a_process_restarted_during_the_outage_builds_no_older_shard_before_the_unrecorded_batch(
        world: World) -> None:
    # After a restart nothing is held, and recovery went oldest first: a shard whose upload had
    # failed (a 502 before the outage) was built before the shard whose batch was at OpenAI, and
    # its record was refused too: one more unrecorded batch at each restart of the outage.
    for job in (1, 2):
        world.store.add(lots(2, job_id=f"job-{job}"))
    world.batches.errors["upload"] = [ModelUnavailableError("HTTP 502") for _ in range(2)]
    asyncio.run(flush_due(world.stage))  # both uploads failed: two older building shards, no batch
    kafka_accepts = kafka_refuses(world)
    world.store.add(lots(2, job_id="job-0"))
    asyncio.run(flush_due(world.stage))  # job-0's batch created, not on record
    for _ in range(2):  # a rolling deploy, then another
        world.restart()
        world.rounds(2)
        world.housekeep()
    created = len(world.batches.batches)
    assert created == 1, f"{created} batches created while Kafka refused their records"

    kafka_accepts()
    world.rounds(2)
    every_lot_sent_once_and_described(world, 3)


def test_in_direct_mode_a_process_restarted_during_the_outage_calls_the_model_for_no_older_shard(
        world: World, tmp_path: Path) -> None:
    # Direct mode's create is noted before the model is called, and the note cleared if the call
    # made nothing: its shards with a batch are noted, so a restart tries them first as well.
    calls: list[str] = []
    server_up = False

    async def call(body: Mapping[str, Any]) -> dict[str, Any]:
        if not server_up:
            raise ModelUnreachableError("connection refused")
        calls.append(body["input"][0]["content"][-1]["text"])
        return described(calls[-1], body)

    direct = DirectBatches(call, 4, tmp_path)
    world.stage.batches = direct
    world.store.add(lots(2, job_id="job-1"))
    asyncio.run(flush_due(world.stage))  # the server refused job-1's round whole: no batch
    server_up = True
    kafka_accepts = kafka_refuses(world)
    world.store.add(lots(2, job_id="job-0"))
    asyncio.run(flush_due(world.stage))  # job-0's lots answered, its batch not on record
    world.restart(direct)
    world.rounds(2)
    assert len(calls) == 2, f"the model called for {len(calls)} lots while Kafka refused"

    kafka_accepts()
    world.rounds(2)
    assert len(calls) == 4 and len(world.submitted()) == 2
    assert world.completed() == sorted(f"job-{job}-lot-{i}" for job in range(2) for i in range(2))


def images_checked(world: World) -> list[str]:
    """Every image URL the stage checks from now on (each check is a lot's preparation)."""
    checked: list[str] = []

    async def counted(urls: Sequence[str]) -> ImageCheck:
        checked.extend(urls)
        return await dead_images_unreachable(urls)

    assert isinstance(world.stage.spec, VisionStage)
    world.stage.spec = replace(world.stage.spec, check_images=counted)
    return checked


def test_a_held_shard_with_no_batch_is_prepared_once_under_a_quota_pause(world: World) -> None:
    # Its batch not found, the hold ended and the shard was built at once with no try of the quota
    # pause: every image checked (the settled lots' events published), then the upload stopped by
    # the pause, and all of it done again by the next watch's try.
    kafka_accepts = kafka_refuses(world)
    world.store.add(lots(2, job_id="job-0"))
    world.rounds()  # job-0's batch created, not on record
    world.restart()  # a new process, which knows nothing of it
    world.store.add(lots(2, job_id="job-1"))
    world.batches.errors["create"] = [quota_refusal()]
    asyncio.run(flush_due(world.stage))  # job-1's create refused: the quota pause begins
    world.store.clock += QUOTA_FIRST_WAIT_S
    world.rounds()  # the try's recovery finds job-0's batch; Kafka refuses its record: held
    assert world.stage.held_shard is not None
    [batch_id] = world.batches.batches
    world.batches.unlisted.add(batch_id)  # its batch no longer shows
    world.store.db_clock_ahead_s = lifecycle.CREATE_LANDS_S  # and its create can no longer land
    kafka_accepts()
    checked = images_checked(world)
    world.rounds(2)
    times = sum("/job-0/" in url for url in checked) // 2  # two lots, one image each
    assert times == 1, f"job-0's lots prepared {times} times"
    del world.batches.batches[batch_id]  # never there, for this test's count
    every_lot_sent_once_and_described(world, 2)
