"""OpenAI refusing batches for the quota (429 `insufficient_quota`, billing out for hours): the
refused create's file is deleted and the stage pauses, trying one shard after a growing wait,
until a batch is created again (in-memory ports)."""

from __future__ import annotations

import asyncio
import logging

import httpx2 as httpx
import openai
import pytest

from lotlens_common.model.errors import ModelError, ModelQuotaExceededError, ModelUnavailableError
from lotlens_common.model.openai_client import _mapped
from lotlens_common.producer import PublishError
from lotlens_common.stage.ports import QUOTA_EXHAUSTED
from lotlens_common.stage.quota import QUOTA_FIRST_WAIT_S, next_wait_s
from lotlens_common.stage.submit import flush_due
from tests.unit.stage.conftest import World, lots, scraped
from tests.unit.stage.test_unreadable_pause import another_project


def quota_refusal() -> ModelError:
    """What the OpenAI client raises for OpenAI's answer when the billing is out."""
    request = httpx.Request("POST", "https://api.openai.com/v1/batches")
    body = {"error": {"message": "You exceeded your current quota, please check your plan and billing "
                      "details.", "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}
    response = httpx.Response(429, request=request, json=body)
    return _mapped(openai.RateLimitError("quota", response=response, body=body["error"]))


def paused() -> float:
    return scraped("lotlens_stage_paused")


def test_the_quota_refusal_is_a_model_unavailable_error_of_its_own() -> None:
    refusal = quota_refusal()
    assert isinstance(refusal, ModelQuotaExceededError) and isinstance(refusal, ModelUnavailableError)
    assert "insufficient_quota" in str(refusal)


def test_creates_refused_for_the_quota_leave_no_file_and_pause_the_stage(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    # Each watch round rebuilt the shard (up to 198 MB uploaded) and left its file at OpenAI for
    # 30 days, with a traceback; new jobs were claimed into shards that stayed building.
    world.store.add(lots(2))
    world.batches.errors["create"] = [quota_refusal() for _ in range(5)]
    world.rounds()
    world.store.add(lots(2, job_id="job-2"))
    world.rounds(4)  # four watch rounds of the outage (10 s each in production)
    assert world.batches.batches == {} and world.batches.files == {}
    assert len(world.batches.uploaded_bytes) == 1  # built and uploaded once, not once a round
    assert [s.job_id for s in world.store.shards_by_id.values()] == ["job-1"]  # job-2 not claimed
    assert paused() == 1
    said = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1 and "quota" in said[0].getMessage() and said[0].exc_info is None


def test_the_quota_pause_tries_one_shard_after_a_growing_wait_and_ends_with_a_batch_created(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.store.add(lots(2))
    world.batches.errors["create"] = [quota_refusal(), quota_refusal()]
    world.rounds()
    world.store.add(lots(2, job_id="job-2"))
    world.store.clock += QUOTA_FIRST_WAIT_S  # the minute passes: recovery tries the refused shard, refused
    world.rounds(3)
    pause = world.store.quota_pause()
    assert pause is not None and pause.retry_in_s == 2 * QUOTA_FIRST_WAIT_S
    assert len(world.batches.uploaded_bytes) == 2 and world.batches.files == {}
    world.store.clock += 2 * QUOTA_FIRST_WAIT_S  # two more minutes: the try is taken, submitting resumes
    world.rounds(3)
    assert not world.stage.unreadable and paused() == 0
    assert len(world.completed()) == 4 and len(world.batches.batches) == 2
    ended = [r.getMessage() for r in caplog.records if "creates batches again" in r.getMessage()]
    assert len(ended) == 1


def test_tries_on_time_wait_one_two_four_eight_then_fifteen_minutes() -> None:
    # The schedule the process kept in memory (each wait twice the one before, at most 15 min),
    # now from the pause's beginning on the rows alone, whichever instance tries.
    paused_s, waits = 0.0, []
    for _ in range(6):
        waits.append(next_wait_s(paused_s))
        paused_s += waits[-1]
    assert [wait / 60 for wait in waits] == [1, 2, 4, 8, 15, 15]


def test_a_batch_found_and_adopted_leaves_the_due_try_to_the_refused_shard(world: World) -> None:
    # The try was taken before recovery looked for each shard's batch: an older shard whose batch
    # existed (Kafka had refused its record) was adopted under it, no create asked, and the refused
    # shard waited the doubled wait for a try of its own.
    world.store.add(lots(1))
    publish = world.publisher.publish

    def kafka_down(*_args: object) -> None:
        world.publisher.publish = publish  # type: ignore[method-assign]
        raise PublishError("Kafka did not acknowledge")

    world.publisher.publish = kafka_down  # type: ignore[method-assign, assignment]
    asyncio.run(flush_due(world.stage))  # job-1's batch created, not on record: its shard stays building
    world.restart()  # another instance (this one creates no batch until job-1's is on record)
    world.store.add(lots(1, job_id="job-2"))
    world.batches.errors["create"] = [quota_refusal()]
    asyncio.run(flush_due(world.stage))  # job-2's create refused: the pause begins
    world.store.clock += QUOTA_FIRST_WAIT_S
    world.rounds()
    assert world.store.quota_pause() is None, "the try went to the adopted batch"
    assert sorted(event.job_id for event in world.submitted()) == ["job-1", "job-2"]
    assert len(world.batches.batches) == 2  # job-1's adopted, not built again


def test_a_round_lists_no_building_shard_for_a_try_another_pause_keeps_from_building(world: World) -> None:
    # The key moved to another project (job-1's batch unreadable there) while the billing was out:
    # each building shard took the due try, listed the stage's batches (up to 50 pages), could
    # not build, gave the try back, and the next shard took it: every shard listed every round.
    project_a = world.batches
    project_a.finish = None
    world.store.add(lots(1))
    world.rounds()  # job-1's batch runs in the first project
    for job_id in ("job-2", "job-3", "job-4"):
        world.store.add(lots(1, job_id=job_id))
    project_a.errors["upload"] = [ModelUnavailableError("HTTP 502") for _ in range(2)]
    project_a.errors["create"] = [quota_refusal()]
    asyncio.run(flush_due(world.stage))  # two uploads failed, the third shard's create refused
    assert len(world.store.shards("building")) == 3 and world.store.quota_pause() is not None
    project_b = another_project()
    world.restart(project_b)
    world.rounds()  # job-1's batch answers 404 there: the stage is paused for it too
    assert world.stage.unreadable.keys() - {QUOTA_EXHAUSTED}
    world.store.clock += QUOTA_FIRST_WAIT_S  # the quota pause's try is due
    project_b.pages_listed = 0
    world.rounds()
    assert project_b.pages_listed == 1, "each building shard listed the stage's batches"  # the watch's
    pause = world.store.quota_pause()
    assert pause is not None and pause.retry_in_s <= 0  # the try is still due, for a shard it can build
    assert project_b.batches == {} and len(world.store.shards("building")) == 3
    world.restart(project_a)  # the first project's key back: job-1's batch is read again
    world.rounds(2)
    assert world.store.quota_pause() is None and world.store.shards("building") == []
