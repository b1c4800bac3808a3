"""The vision stage paused, on PostgreSQL, Kafka and the stand-in: a batch sent in a project the
key no longer sees holds it through a key of another project and a restart (nothing is paid for
twice), and a create refused for the quota leaves no file at OpenAI and pauses it until a try
succeeds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.quota import QUOTA_FIRST_WAIT_S
from lotlens_common.stage.runner import housekeep, step
from tests.conftest import new_id
from tests.integration.stage.helpers import lot_statuses, open_lots, quota_wait_passes, runtime, submit_lots
from tests.integration.stage.release_support import lots_in, sent_in_a_project_now_gone, shard_row
from tests.servers import image_host
from tests.standin import Standin

pytestmark = pytest.mark.integration


def _jobs_sent(standin: Standin) -> list[str]:
    return [metadata["lotlens_job_id"] for metadata in standin.stats()["batch_metadata"]]


def test_a_key_of_another_project_keeps_the_stage_paused_through_its_own_batch_and_a_restart(
        settings: ServiceSettings, engine: Engine, standin: Standin, tmp_path: Path) -> None:
    # The first round under the new key created job-2's batch in the new project, then read job-1's
    # (404) and listed the new project's batches: job-2's, on record, so job-1's batch was taken for
    # lost and its lots sent again while the old project ran them. A restart while paused forgot
    # the pause and did the same.
    job_1, job_2, job_3 = new_id("job-"), new_id("job-"), new_id("job-")
    with image_host() as images:
        shard_id = sent_in_a_project_now_gone(settings, engine, tmp_path, job_1, images, 2)
        lots_in(engine, job_2, images, 1)

        async def new_key() -> None:
            async with runtime(settings, engine, standin) as rt:
                await housekeep(rt)
                for _ in range(3):
                    await step(rt, watching=True)
                assert rt.unreadable.keys() == {shard_id}

        async def restarted() -> None:
            async with runtime(settings, engine, standin) as rt:
                await step(rt, watching=True)
                assert rt.unreadable.keys() == {shard_id}

        asyncio.run(new_key())
        assert _jobs_sent(standin) == [job_2]
        lots_in(engine, job_3, images, 1)  # arrives while paused
        asyncio.run(restarted())
    assert _jobs_sent(standin) == [job_2]  # job-3 waits, job-1 is not sent again
    row = shard_row(engine, shard_id)
    assert row["status"] == "submitted" and "none of our batches created before" in row["unreadable_reason"]
    assert set(lot_statuses(engine, "vision", job_1).values()) == {store.SUBMITTED}
    assert lot_statuses(engine, "vision", job_3) == {"lot-0": store.WAITING}


def test_a_create_refused_for_the_quota_deletes_its_file_and_pauses_until_a_try_succeeds(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # The file of each refused create stayed at OpenAI for 30 days (customer data), the shard was
    # rebuilt and uploaded again at every watch round, and new jobs were claimed meanwhile.
    job_1, job_2 = new_id("job-"), new_id("job-")
    submit_lots(engine, job_1, ["a", "b"])
    standin.faults(api_faults=[{"scope": "batches", "kind": "insufficient_quota", "count": 1}])
    uploaded: list[str] = []

    async def scenario() -> None:
        async with runtime(settings, engine, standin) as rt:
            upload = rt.batches.upload_batch_file

            async def recorded(path: Path) -> str:
                uploaded.append(await upload(path))
                return uploaded[-1]

            rt.batches.upload_batch_file = recorded  # type: ignore[method-assign]
            await step(rt, watching=True)
            submit_lots(engine, job_2, ["c"])
            for _ in range(3):
                await step(rt, watching=True)
            assert rt.unreadable and len(uploaded) == 1 and standin.stats()["batches_created"] == 0
            assert standin.control.get(f"/v1/files/{uploaded[0]}").status_code == 404
            assert lot_statuses(engine, "vision", job_2) == {"lot-0": store.WAITING}
            quota_wait_passes(engine, QUOTA_FIRST_WAIT_S)  # the refused shard is tried, and created
            deadline = time.monotonic() + 60
            while open_lots(engine, "vision", job_1) or open_lots(engine, "vision", job_2):
                assert time.monotonic() < deadline, _statuses(engine, job_1, job_2)
                await step(rt, watching=True)
                await asyncio.sleep(0.1)
            assert not rt.unreadable

    asyncio.run(scenario())
    assert sorted(_jobs_sent(standin)) == sorted([job_1, job_2])


def _statuses(engine: Engine, *job_ids: str) -> dict[str, Any]:
    return {job_id: lot_statuses(engine, "vision", job_id) for job_id in job_ids}
