"""A shard whose batch no key of ours can see any more (its OpenAI project deleted, the key one of
another project) holds the stage paused for good: `lotlens-admin shards paused` shows it, and
`lotlens-admin shards release` lets it go by the operator's decision, the running stage carrying
it out without a restart."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from lotlens_admin.cli import build_parser
from lotlens_common.events import LotFailed
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.adapters import postgres_locks, postgres_release
from lotlens_common.stage.collect import watch
from lotlens_common.stage.runner import step
from tests.conftest import Infra, new_id
from tests.integration.stage.helpers import (
    completed_lots,
    job_events,
    lot_statuses,
    open_lots,
    runtime,
    submit_lots,
    submitted_shard,
)
from tests.integration.stage.release_support import (
    SETTLED_S,
    admin,
    lots_in,
    paused,
    sent_in_a_project_now_gone,
    shard_row,
    start_stage,
    wait_gauge,
    wait_paused,
)
from tests.polling import wait_for
from tests.servers import free_port, image_host
from tests.standin import Standin

pytestmark = pytest.mark.integration


def _wait_done(engine: Engine, *job_ids: str) -> None:
    wait_for(lambda: not any(open_lots(engine, "vision", job_id) for job_id in job_ids),
             lambda: f"every lot done: {({job: lot_statuses(engine, 'vision', job) for job in job_ids})}",
             timeout_s=SETTLED_S, every_s=0.3)


def test_a_shard_no_key_can_see_is_released_to_resend_and_the_running_stage_unpauses(
        infra: Infra, settings: ServiceSettings, engine: Engine, standin: Standin, tmp_path: Path) -> None:
    # The old stage stayed paused until the batch showed up in a listing, which with the old
    # project gone was never: every job's lots waited for good, and the only way out was editing
    # tables by hand (there was no `shards` command: `invalid choice: 'shards'`).
    job_id, later_job = new_id("job-"), new_id("job-")
    port = free_port()
    with image_host() as images:
        shard_id = sent_in_a_project_now_gone(settings, engine, tmp_path, job_id, images, 2)
        stage = start_stage(settings, standin, port)
        try:
            shown = wait_paused(infra, settings, shard_id)
            assert (shown["stage"], shown["job_id"], shown["lot_count"]) == ("vision", job_id, 2)
            assert shown["batch_id"] and shown["unreadable_since"]
            assert "none of our batches" in shown["unreadable_reason"]
            wait_gauge(port, 1.0)
            lots_in(engine, later_job, images, 1)  # arrives while paused: it waits

            released = admin(infra, settings, "shards", "release", shard_id, "--resend",
                             "--reason", "the old OpenAI project was deleted", "--by", "on-call")
            assert released.returncode == 0, released.stderr
            assert "may charge for those lots twice" in released.stdout

            _wait_done(engine, job_id, later_job)
            wait_gauge(port, 0.0)
            assert stage.poll() is None  # the same process: no restart
        finally:
            stage.send_signal(signal.SIGTERM)
            stage.wait(timeout=60)
    assert completed_lots(job_events(settings, settings.topics.vision, job_id, 2)) == ["lot-0", "lot-1"]
    assert completed_lots(job_events(settings, settings.topics.vision, later_job, 1)) == ["lot-0"]
    assert standin.stats()["batches_created"] >= 1  # sent again, under the new project's key
    row = shard_row(engine, shard_id)
    assert (row["status"], row["batch_status"], row["release"], row["released_by"]) == (
        "collected", "released", "resend", "on-call")
    assert row["release_reason"] == "the old OpenAI project was deleted"
    assert row["released_at"] is not None
    assert paused(infra, settings) == []


def test_a_stage_killed_while_carrying_out_a_release_carries_it_out_after_its_restart(
        infra: Infra, settings: ServiceSettings, engine: Engine, standin: Standin, tmp_path: Path) -> None:
    # Killed (-9) after the release's outcomes were published and before the lots were written:
    # the shard is still submitted with its decision, and the next process carries it out.
    job_id = new_id("job-")
    with image_host() as images:
        shard_id = sent_in_a_project_now_gone(settings, engine, tmp_path, job_id, images, 2)
        dying = start_stage(settings, standin, free_port(), LOTLENS_FAULT_AT="vision.after_results_published")
        try:
            wait_paused(infra, settings, shard_id)
            released = admin(infra, settings, "shards", "release", shard_id, "--resend", "--reason", "gone")
            assert released.returncode == 0, released.stderr
            assert dying.wait(timeout=SETTLED_S) == -signal.SIGKILL
        finally:
            if dying.poll() is None:
                dying.kill()
        assert shard_row(engine, shard_id)["status"] == "submitted"  # cut before the shard closed
        stage = start_stage(settings, standin, free_port())
        try:
            _wait_done(engine, job_id)
        finally:
            stage.send_signal(signal.SIGTERM)
            stage.wait(timeout=60)
    assert completed_lots(job_events(settings, settings.topics.vision, job_id, 2)) == ["lot-0", "lot-1"]
    assert shard_row(engine, shard_id)["batch_status"] == "released"


def test_a_shard_released_to_fail_fails_its_lots_with_the_reason_and_the_stage_submits_again(
        infra: Infra, settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # The stage stays the same object throughout: its in-memory pause for the shard must go when
    # the release is carried out (it stayed until the process restarted), and the gauge with it.
    unseen_job, new_job = new_id("job-"), new_id("job-")
    shard_id = submitted_shard(engine, unseen_job, "batch_elsewhere")

    async def scenario() -> None:
        async with runtime(settings, engine, standin) as rt:
            await watch(rt)
            assert set(rt.unreadable) == {shard_id}
            submit_lots(engine, new_job, ["arrives while paused"])
            await step(rt, watching=True)
            assert standin.stats()["batches_created"] == 0
            released = await asyncio.to_thread(admin, infra, settings, "shards", "release", shard_id,
                                               "--fail", "--reason", "project deleted, customer agreed")
            assert released.returncode == 0, released.stderr
            deadline = time.monotonic() + SETTLED_S
            while open_lots(engine, "vision", new_job):
                assert time.monotonic() < deadline, lot_statuses(engine, "vision", new_job)
                await step(rt, watching=True)
                await asyncio.sleep(0.1)
            assert rt.unreadable == {}
            assert not rt.store.figures().paused

    asyncio.run(scenario())
    assert lot_statuses(engine, "vision", unseen_job) == {"lot-0": store.FAILED}
    failed = [e.event for e in job_events(settings, settings.topics.vision, unseen_job, 1)
              if isinstance(e.event, LotFailed)]
    assert [event.reason for event in failed] == [
        "OpenAI batch batch_elsewhere could not be read; failed by an operator's decision"]
    assert completed_lots(job_events(settings, settings.topics.vision, new_job, 1)) == ["lot-0"]


def test_release_refuses_shards_that_hold_no_pause_and_is_idempotent(
        infra: Infra, settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_id, readable_job = new_id("job-"), new_id("job-")
    shard_id = submitted_shard(engine, job_id, "batch_elsewhere")

    async def pause() -> None:
        async with runtime(settings, engine, standin) as rt:
            await watch(rt)

    asyncio.run(pause())
    readable = submitted_shard(engine, readable_job, "batch_read_fine")  # never found unreadable
    unknown = admin(infra, settings, "shards", "release", "vision-nosuch", "--fail", "--reason", "x")
    assert unknown.returncode == 1 and "is unknown" in unknown.stderr
    following = admin(infra, settings, "shards", "release", readable, "--fail", "--reason", "x")
    assert following.returncode == 1 and "holds no stage paused" in following.stderr
    with postgres_locks.exclusive(engine, shard_id) as mine:  # a stage acting on it right now
        assert mine
        busy = admin(infra, settings, "shards", "release", shard_id, "--fail", "--reason", "x")
    assert busy.returncode == 1 and "a stage holds shard" in busy.stderr
    assert shard_row(engine, shard_id)["release"] is None

    first = admin(infra, settings, "shards", "release", shard_id, "--fail", "--reason", "first", "--by", "a")
    again = admin(infra, settings, "shards", "release", shard_id, "--fail", "--reason", "again", "--by", "b")
    other = admin(infra, settings, "shards", "release", shard_id, "--resend", "--reason", "other",
                  "--by", "c")
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0 and "already released (fail) by a" in again.stdout
    assert other.returncode == 1 and "a decision is not changed" in other.stderr
    row = shard_row(engine, shard_id)
    assert (row["release"], row["released_by"], row["release_reason"]) == ("fail", "a", "first")
    assert [shard["shard_id"] for shard in paused(infra, settings)] == [shard_id]  # not carried out yet
    shown = admin(infra, settings, "shards", "paused").stdout
    assert shard_id in shown and "unreadable since" in shown and "released (fail) by a" in shown
    with pytest.raises(SystemExit):  # no decision, no release
        build_parser().parse_args(["shards", "release", shard_id, "--reason", "no decision"])
    # The batch read after all before the release is carried out (the old key put back): the
    # release goes with the pause (carried out, it sent a running batch's lots again).
    with engine.begin() as conn:
        postgres_release.note_unreadable(conn, shard_id, None)
    row = shard_row(engine, shard_id)
    assert (row["release"], row["released_by"], row["unreadable_since"]) == (None, None, None)
    assert paused(infra, settings) == []
