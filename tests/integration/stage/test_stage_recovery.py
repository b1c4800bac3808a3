"""The vision stage when things go wrong: two instances sharing a job, a crash around batch creation,
a batch OpenAI no longer knows or the key cannot see."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from lotlens_common.envelope import Envelope
from lotlens_common.events import (
    VisionBatchSubmitted,
    VisionCompleted,
)
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage import submit
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.collect import watch
from lotlens_common.stage.recover import recover_building
from lotlens_common.stage.runner import step
from lotlens_common.stage.submit import flush_due
from tests.conftest import ROOT, new_id
from tests.events import read_events
from tests.integration.stage.helpers import (
    completed_lots,
    create_batch,
    drive,
    job_events,
    lot_statuses,
    publish_lots,
    runtime,
    stage_env,
    submit_lots,
    submitted_shard,
    vision_spec,
)
from tests.servers import image_host
from tests.standin import Standin


def test_two_instances_share_a_job_without_duplicating_a_batch(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id = new_id("job-")
    env = stage_env(settings, standin, LOTLENS_STAGE__MAX_REQUESTS_PER_BATCH="10")
    command = [sys.executable, "-m", "lotlens_vision_batcher"]
    with image_host() as images:
        instances = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL) for _ in range(2)]
        try:
            publish_lots(settings, job_id, images, 60)
            # Completions, not a count of events: how many batches the lots make depends on timing.
            events = [e for e in read_events(
                settings.kafka.bootstrap_servers, settings.topics.vision,
                lambda seen: len({e.event.lot_id for e in seen if e.job_id == job_id
                                  and isinstance(e.event, VisionCompleted)}) >= 60,
                timeout_s=120) if e.job_id == job_id]
        finally:
            for instance in instances:
                instance.terminate()
                instance.wait(timeout=30)
    batches = {e.event.batch_id: e.event for e in events if isinstance(e.event, VisionBatchSubmitted)}
    lots_in_batches = [lot for batch in batches.values() for lot in batch.lot_ids]
    assert sorted(lots_in_batches) == sorted(f"lot-{i}" for i in range(60))  # each lot once
    assert standin.stats()["batches_created"] == len(batches)
    assert completed_lots(events) == sorted(lots_in_batches)


@pytest.mark.parametrize("fault_point", ["vision.after_shard_claimed", "vision.after_batch_created",
                                         "vision.after_batch_published"])
def test_a_crash_around_batch_creation_never_loses_or_duplicates_the_batch(
        settings: ServiceSettings, engine: Engine, standin: Standin, fault_point: str) -> None:
    job_id = new_id("job-")
    with image_host() as images:
        events = crash_and_restart(settings, stage_env(settings, standin), job_id, images, fault_point, 4)
    assert completed_lots(events) == ["lot-0", "lot-1", "lot-2"]
    shards = {m["lotlens_shard_id"] for m in standin.stats()["batch_metadata"]}
    assert standin.stats()["batches_created"] == len(shards) == 1
    assert json.dumps(lot_statuses(engine, "vision", job_id), sort_keys=True) == json.dumps(
        {f"lot-{i}": store.DONE for i in range(3)}, sort_keys=True)


class Crash(BaseException):
    """The builder dies here."""


def test_recovery_reads_only_the_listing_page_that_shows_the_shards_batch(
        settings: ServiceSettings, engine: Engine, standin: Standin, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A dead builder's batch is looked up by its shard's metadata: every page of the listing (100
    # batches each, up to 50) was read after the one that showed it, for each such shard.
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a"])

    def die(name: str) -> None:
        if name == "vision.after_batch_created":
            raise Crash(name)

    async def scenario() -> int:
        async with runtime(settings, engine, standin) as rt:
            for i in range(100):  # the stage's older batches: a second page
                await create_batch(rt, tmp_path, new_id("job-older-"), f"vision-older-{i}", ["lot-0"])
            monkeypatch.setattr(submit, "fault_point", die)
            with pytest.raises(Crash):
                await flush_due(rt)
            monkeypatch.undo()
            before = standin.recorder.exchanges
            await recover_building(rt)
            return standin.recorder.exchanges - before

    exchanges = asyncio.run(scenario())
    assert exchanges == 1  # one page of the listing, nothing else asked of OpenAI
    events = job_events(settings, settings.topics.vision, job_id, 1)
    assert [len(e.event.lot_ids) for e in events if isinstance(e.event, VisionBatchSubmitted)] == [1]
    assert standin.stats()["batches_created"] == 101  # adopted, not built again


def test_results_published_again_after_a_crash_keep_their_event_ids(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    """Killed after publishing a shard's results and before marking its lots, the stage publishes
    them again once restarted: each copy must carry the first one's id, or a subscriber that
    deduplicates by `event_id` (as the contract says) takes it for a second result."""
    job_id = new_id("job-")
    with image_host() as images:
        events = crash_and_restart(settings, stage_env(settings, standin), job_id, images,
                                   "vision.after_results_published", 7)
    ids: dict[str, list[str]] = {}
    for envelope in events:
        if isinstance(envelope.event, VisionCompleted):
            ids.setdefault(envelope.event.lot_id, []).append(envelope.event_id)
    assert sorted(ids) == ["lot-0", "lot-1", "lot-2"]
    # Twice each: the crash came before the lots were marked, so their results went out again.
    assert [len(copies) for copies in ids.values()] == [2, 2, 2]
    assert [len(set(copies)) for copies in ids.values()] == [1, 1, 1]
    assert standin.stats()["batches_created"] == 1
    assert set(lot_statuses(engine, "vision", job_id).values()) == {store.DONE}


def crash_and_restart(settings: ServiceSettings, env: dict[str, str], job_id: str, images: str,
                      fault_point: str, events: int) -> list[Envelope]:
    """Run the vision-batcher on 3 lots until it dies at the fault point, then a healthy one until
    the job has `events` events on the vision topic; returns them all."""
    publish_lots(settings, job_id, images, 3)
    command = [sys.executable, "-m", "lotlens_vision_batcher"]
    # One static member, as `make up` runs it: the restarted process takes the killed one's partitions
    # at once instead of after its session timeout (6 s of every such test). What is recovered is
    # decided by the database either way; deploy/k8s runs dynamic members.
    env = {**env, "KAFKA_GROUP_INSTANCE_ID": "vision-batcher"}
    crashed = subprocess.run(command, cwd=ROOT, env={**env, "LOTLENS_FAULT_AT": fault_point},
                             timeout=60, capture_output=True)
    assert crashed.returncode == -9, crashed.stderr.decode()[-2000:]
    survivor = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        return job_events(settings, settings.topics.vision, job_id, events)
    finally:
        survivor.terminate()
        survivor.wait(timeout=30)


def test_a_batch_openai_no_longer_knows_is_resubmitted_and_does_not_block_other_shards(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    lost_job, live_job = new_id("job-"), new_id("job-")
    submit_lots(engine, live_job, ["live a"])
    asyncio.run(drive(settings, engine, standin, vision_spec(settings), live_job))
    # A shard whose batch id OpenAI does not know (e.g. records restored from a backup), claimed
    # after the live job's batch was created: only a batch of ours created before it shows that the
    # key sees its project (OpenAI dates batches in whole seconds, hence the second's wait).
    time.sleep(1.0)
    submitted_shard(engine, lost_job, "batch_gone")
    asyncio.run(drive(settings, engine, standin, vision_spec(settings), lost_job))

    events = job_events(settings, settings.topics.vision, lost_job, 2)
    assert completed_lots(events) == ["lot-0"]
    assert len(job_events(settings, settings.topics.vision, live_job, 2)) == 2


def test_a_batch_the_key_cannot_see_pauses_the_stage_and_nothing_is_paid_for_twice(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # The old stage took a 404 for "failed" and sent the lot again: with a rotated key or another
    # project's key, every lot of the job was paid for twice.
    unseen_job, new_job = new_id("job-"), new_id("job-")
    shard_id = submitted_shard(engine, unseen_job, "batch_elsewhere")

    async def scenario() -> None:
        async with runtime(settings, engine, standin) as rt:
            await watch(rt)
            submit_lots(engine, new_job, ["arrives while paused"])
            for _ in range(3):
                await step(rt, watching=True)
            assert rt.unreadable == {shard_id: rt.unreadable[shard_id]}

    asyncio.run(scenario())
    assert standin.stats()["batches_created"] == 0
    assert lot_statuses(engine, "vision", unseen_job) == {"lot-0": store.SUBMITTED}
    assert lot_statuses(engine, "vision", new_job) == {"lot-0": store.WAITING}
