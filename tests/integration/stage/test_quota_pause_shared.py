"""A create refused for the quota pauses every instance of the stage, on PostgreSQL, Kafka and the
stand-in: two stages on one database (two replicas, or one and its restart) upload one file per
try between them, the wait grows as it did in one process, and the pause ends for all when a
batch is created again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import Engine, text

from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.ports import BatchesPort
from lotlens_common.stage.quota import QUOTA_FIRST_WAIT_S
from lotlens_common.stage.runner import step
from lotlens_common.stage.submit import flush_due
from tests.conftest import Infra, new_id
from tests.integration.stage.helpers import lot_statuses, open_lots, quota_wait_passes, runtime, submit_lots
from tests.integration.stage.release_support import admin, paused
from tests.standin import Standin

pytestmark = pytest.mark.integration


def _refuse_creates(standin: Standin, count: int) -> None:
    """The next `count` creates are refused for the quota (none: the billing is restored)."""
    create = {"scope": "batches", "method": "POST", "kind": "insufficient_quota", "count": count}
    standin.faults(api_faults=[create] if count else [])


def _pause(engine: Engine) -> list[dict[str, Any]]:
    """The quota pause as the shard rows hold it: since, why, and seconds until its next try."""
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(text(
            "SELECT shard_id, status, quota_paused_since, quota_reason, "
            "       extract(epoch FROM quota_retry_at - now()) AS retry_in_s "
            "  FROM stage_shards WHERE quota_retry_at IS NOT NULL"))]


def test_a_quota_pause_holds_another_instance_and_a_restarted_one(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # The pause lived in the process's memory: a second replica (or the same one restarted) built,
    # uploaded and created at once, so N replicas put N files of customer image URLs at OpenAI a round.
    job_1, job_2 = new_id("job-"), new_id("job-")
    submit_lots(engine, job_1, ["a", "b"])
    _refuse_creates(standin, 1)

    async def scenario() -> None:
        async with runtime(settings, engine, standin) as first:
            await step(first, watching=True)
            assert standin.stats()["files_uploaded"] == 1 and standin.stats()["batches_created"] == 0
            submit_lots(engine, job_2, ["c"])
            async with runtime(settings, engine, standin) as second:
                for _ in range(3):
                    await step(second, watching=True)
                uploaded_created = standin.stats()["files_uploaded"], standin.stats()["batches_created"]
                assert uploaded_created == (1, 0), "the second instance uploaded or created while paused"
                assert second.unreadable
        async with runtime(settings, engine, standin) as restarted:
            await step(restarted, watching=True)
            assert restarted.unreadable

    asyncio.run(scenario())
    stats = standin.stats()
    assert (stats["files_uploaded"], stats["batches_created"]) == (1, 0), stats
    assert lot_statuses(engine, "vision", job_2) == {"lot-0": store.WAITING}
    [pause] = _pause(engine)
    assert pause["status"] == "building" and "insufficient_quota" in pause["quota_reason"]
    assert QUOTA_FIRST_WAIT_S - 30 < pause["retry_in_s"] <= QUOTA_FIRST_WAIT_S


def test_one_instance_takes_each_try_the_wait_doubles_and_a_created_batch_ends_the_pause_for_all(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    job_1, job_2 = new_id("job-"), new_id("job-")
    submit_lots(engine, job_1, ["a", "b"])
    submit_lots(engine, job_2, ["c"])
    _refuse_creates(standin, 1000)  # the billing is out until the test restores it

    async def scenario() -> None:
        async with runtime(settings, engine, standin) as first, runtime(settings, engine, standin) as second:
            await step(first, watching=True)  # refused: the pause begins
            assert standin.stats()["files_uploaded"] == 1
            quota_wait_passes(engine, QUOTA_FIRST_WAIT_S)
            for _ in range(3):
                await step(first, watching=True)
                await step(second, watching=True)
            assert standin.stats()["files_uploaded"] == 2  # one try between them, refused
            [retry_in_s] = {round(pause["retry_in_s"] / 10) * 10 for pause in _pause(engine)}
            assert retry_in_s == 2 * QUOTA_FIRST_WAIT_S, _pause(engine)
            _refuse_creates(standin, 0)  # the billing is restored
            quota_wait_passes(engine, 2 * QUOTA_FIRST_WAIT_S)
            for _ in range(40):  # the try is created: both submit again, every lot is sent
                await step(first, watching=True)
                await step(second, watching=True)
                if not open_lots(engine, "vision", job_1) + open_lots(engine, "vision", job_2):
                    break
                await asyncio.sleep(0.1)
            assert not first.unreadable and not second.unreadable

    asyncio.run(scenario())
    assert not open_lots(engine, "vision", job_1) + open_lots(engine, "vision", job_2)
    assert _pause(engine) == []


def test_shards_paused_lists_a_quota_pause_and_a_release_of_it_is_refused(
        infra: Infra, settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # `shards paused`, on-call's list of what holds a stage paused, showed only unreadable batches:
    # a stage paused for the quota read "no shard holds a stage paused".
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a"])
    _refuse_creates(standin, 1)

    async def refused() -> None:
        async with runtime(settings, engine, standin) as stage:
            await step(stage, watching=True)

    asyncio.run(refused())
    [shard] = [shard for shard in paused(infra, settings) if shard["job_id"] == job_id]
    assert shard["status"] == "building" and shard["quota_retry_at"], shard
    assert "insufficient_quota" in shard["quota_reason"]
    shown = admin(infra, settings, "shards", "paused").stdout
    assert f"shard {shard['shard_id']}" in shown and "refused for the quota since" in shown, shown
    assert "next try in " in shown, shown
    release = admin(infra, settings, "shards", "release", shard["shard_id"], "--resend", "--reason", "test")
    assert release.returncode == 1 and "paused for the quota" in release.stderr, release
    assert [pause["shard_id"] for pause in _pause(engine)] == [shard["shard_id"]]  # nothing changed


def test_a_try_whose_listing_failed_is_still_due_and_made_at_the_next_round(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # The try was taken before recovery listed the shard's batches: a listing answered 503 used it
    # with no create asked, and the next try came the doubled wait (two minutes) later.
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a"])
    _refuse_creates(standin, 1)

    async def scenario() -> None:
        async with runtime(settings, engine, standin) as stage:
            await step(stage, watching=True)  # refused: the pause begins
            quota_wait_passes(engine, QUOTA_FIRST_WAIT_S)
            # The SDK asks twice more after a 503: three answers fail the listing.
            listing = {"scope": "batches", "method": "GET", "kind": "overloaded", "count": 3}
            standin.faults(api_faults=[listing])
            await step(stage, watching=True)
            [pause] = _pause(engine)
            assert pause["retry_in_s"] <= 0, "the try was used up by a listing that failed"
            await step(stage, watching=True)  # the listing answers: the try is made, and created
            assert (standin.stats()["files_uploaded"], standin.stats()["batches_created"]) == (2, 1)

    asyncio.run(scenario())
    assert _pause(engine) == []


def test_an_instance_that_has_not_seen_the_pause_yet_claims_nothing(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # An instance that had taken up the recorded pauses before this one began read it only right
    # before its upload: it claimed a new job into a shard and prepared it (image checks, minutes).
    job_1, job_2 = new_id("job-"), new_id("job-")
    _refuse_creates(standin, 1)

    async def scenario() -> None:
        async with runtime(settings, engine, standin) as first, runtime(settings, engine, standin) as second:
            await step(second, watching=True)  # running before the pause: nothing recorded yet
            submit_lots(engine, job_1, ["a"])
            await step(first, watching=True)  # refused: the pause begins
            submit_lots(engine, job_2, ["c"])
            await step(second, watching=False)
            assert second.unreadable

    asyncio.run(scenario())
    assert lot_statuses(engine, "vision", job_2) == {"lot-0": store.WAITING}, "claimed while paused"
    assert (standin.stats()["files_uploaded"], standin.stats()["batches_created"]) == (1, 0)


class HeldAt:
    """A batches port whose `method`, once called, waits for `until` before it asks OpenAI."""

    def __init__(self, batches: BatchesPort, method: str, until: Callable[[], Awaitable[object]]) -> None:
        self._batches, self._method, self._until = batches, method, until
        self.reached = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._batches, name)
        if name != self._method:
            return call

        async def held(*args: Any, **kwargs: Any) -> Any:
            self.reached.set()
            await self._until()
            return await call(*args, **kwargs)

        return held


def test_a_try_given_back_leaves_the_wait_of_a_refusal_recorded_meanwhile(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # The hand-back put every holding row's next try at now(): another instance's create, refused
    # (its upload begun before the pause) while this one's try listed the shard's batches, lost
    # its doubled wait, and the next round uploaded and created again at once.
    job_1, job_2 = new_id("job-"), new_id("job-")
    _refuse_creates(standin, 1)

    async def scenario() -> None:
        async with runtime(settings, engine, standin) as first, runtime(settings, engine, standin) as second:
            go_on = asyncio.Event()
            uploading = HeldAt(second.batches, "upload_batch_file", go_on.wait)
            second.batches = uploading
            submit_lots(engine, job_2, ["c"])
            sending = asyncio.create_task(flush_due(second))  # job-2's shard, its upload slow
            await uploading.reached.wait()
            submit_lots(engine, job_1, ["a"])
            await step(first, watching=True)  # job-1's create refused: the pause begins
            quota_wait_passes(engine, QUOTA_FIRST_WAIT_S)
            listing = {"scope": "batches", "method": "GET", "kind": "overloaded", "count": 3}
            create = {"scope": "batches", "method": "POST", "kind": "insufficient_quota", "count": 1}
            standin.faults(api_faults=[listing, create])

            async def second_refused_meanwhile() -> None:
                go_on.set()
                await sending  # job-2's create refused for the quota, its wait on its row

            first.batches = HeldAt(first.batches, "find_batch", second_refused_meanwhile)
            await step(first, watching=True)  # the try taken, its listing failed (503): given back
            assert (standin.stats()["files_uploaded"], standin.stats()["batches_created"]) == (2, 0)
            retry_in_s = max(pause["retry_in_s"] for pause in _pause(engine))
            assert retry_in_s > QUOTA_FIRST_WAIT_S, "the refusal recorded meanwhile lost its wait"
            await step(first, watching=True)
            await step(second, watching=True)

    asyncio.run(scenario())
    stats = standin.stats()
    assert (stats["files_uploaded"], stats["batches_created"]) == (2, 0), "a try came early"
