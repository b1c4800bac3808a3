"""Stage housekeeping: the reconciler (batches with our metadata that no shard row explains,
against the stand-in) and the pruning of finished jobs' work rows."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, event, select, update

from lotlens_common.clock import utc_now
from lotlens_common.events import VisionBatchSubmitted, VisionCompleted
from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters import postgres as store
from lotlens_common.stage.adapters import postgres_prune
from lotlens_common.stage.reconcile import reconcile
from lotlens_common.stage.submit import flush_due
from lotlens_common.stage.work import VisionWork
from lotlens_common.tables import stage_jobs, stage_lots, stage_shards
from tests.conftest import new_id
from tests.integration.stage.helpers import (
    create_batch,
    drive,
    job_events,
    lot_statuses,
    runtime,
    submit_lots,
    vision_spec,
)
from tests.standin import Standin, serve_standin


@pytest.fixture()
def slow_standin(tmp_path: Path) -> Iterator[Standin]:
    """Batches stay `in_progress` for a minute: long enough to be seen running."""
    with serve_standin(tmp_path / "standin", in_progress_seconds=60) as running:
        yield running


def reconciled(action: str) -> float:
    labels = {"stage": "vision", "action": action}
    return REGISTRY.get_sample_value("lotlens_openai_batches_reconciled_total", labels) or 0.0


def batch_status(standin: Standin, batch_id: str) -> str:
    response = standin.control.get(f"/v1/batches/{batch_id}", headers={"Authorization": "Bearer test"})
    return str(response.json()["status"])


def test_an_orphan_batch_is_adopted_and_its_lots_are_not_sent_again(
        settings: ServiceSettings, engine: Engine, tmp_path: Path) -> None:
    job_id, shard_id = new_id("job-"), new_id("vision-orphan-")
    with serve_standin(tmp_path / "standin") as standin:
        submit_lots(engine, job_id, ["a", "b", "c"])

        async def adopt() -> str:
            async with runtime(settings, engine, standin) as rt:
                orphan = await create_batch(rt, tmp_path, job_id, shard_id, ["lot-0", "lot-1"])
                await reconcile(rt)
                return str(orphan["id"])

        orphan_id = asyncio.run(adopt())
        with engine.connect() as conn:
            adopted = store.shard(conn, shard_id)
        assert adopted is not None and adopted.batch_id == orphan_id and adopted.status == "submitted"
        assert lot_statuses(engine, "vision", job_id) == {
            "lot-0": "submitted", "lot-1": "submitted", "lot-2": "waiting"}

        asyncio.run(drive(settings, engine, standin, vision_spec(settings), job_id))
        events = job_events(settings, settings.topics.vision, job_id, 5)
        sent = {e.event.batch_id: set(e.event.lot_ids) for e in events
                if isinstance(e.event, VisionBatchSubmitted)}
        assert sent[orphan_id] == {"lot-0", "lot-1"}
        assert sorted(map(sorted, sent.values())) == [["lot-0", "lot-1"], ["lot-2"]]
        assert sorted(e.event.lot_id for e in events if isinstance(e.event, VisionCompleted)) == [
            "lot-0", "lot-1", "lot-2"]
        ours = [m for m in standin.stats()["batch_metadata"] if m["lotlens_job_id"] == job_id]
        assert len(ours) == 2


def test_a_running_duplicate_of_a_recorded_shard_is_cancelled(
        settings: ServiceSettings, engine: Engine, slow_standin: Standin, tmp_path: Path) -> None:
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a", "b"])

    async def duplicate() -> tuple[str, str]:
        async with runtime(settings, engine, slow_standin) as rt:
            await flush_due(rt)
            with engine.connect() as conn:
                shard_id, batch_id = conn.execute(select(stage_shards.c.shard_id, stage_shards.c.batch_id)
                                                  .where(stage_shards.c.job_id == job_id)).one()
            second = await create_batch(rt, tmp_path, job_id, shard_id, ["lot-0", "lot-1"])
            await reconcile(rt)
            return str(batch_id), str(second["id"])

    recorded, second = asyncio.run(duplicate())
    assert batch_status(slow_standin, second) in {"cancelling", "cancelled"}
    assert batch_status(slow_standin, recorded) in {"validating", "in_progress"}


def test_a_duplicate_that_refuses_its_cancel_is_asked_once_and_not_counted_as_cancelled(
        settings: ServiceSettings, engine: Engine, standin: Standin, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    # A duplicate stuck `finalizing` answers every cancel 409: it was asked again at every
    # reconcile round (every minute) while the listing showed it, each refusal counted a cancel.
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a", "b"])

    async def duplicate() -> str:
        async with runtime(settings, engine, standin) as rt:
            await flush_due(rt)
            with engine.connect() as conn:
                shard_id = conn.execute(select(stage_shards.c.shard_id)
                                        .where(stage_shards.c.job_id == job_id)).scalar_one()
            standin.faults(batch_outcome="stuck_finalizing", batch_outcome_count=1)
            second = str((await create_batch(rt, tmp_path, job_id, shard_id, ["lot-0", "lot-1"]))["id"])
            for _ in range(100):
                if (await rt.batches.retrieve_batch(second))["status"] == "finalizing":
                    break
                await asyncio.sleep(0.05)
            for _ in range(3):
                await reconcile(rt)
            return second

    before = reconciled("cancelled")
    with caplog.at_level(logging.INFO, logger="lotlens_common.stage"):
        second = asyncio.run(duplicate())
    assert batch_status(standin, second) == "finalizing"
    asked = [r for r in caplog.records if r.getMessage().startswith(f"cancelling batch {second}")]
    assert len(asked) == 1
    assert reconciled("cancelled") == before


def test_a_batch_of_a_job_these_tables_never_saw_is_left_alone(
        settings: ServiceSettings, engine: Engine, slow_standin: Standin, tmp_path: Path) -> None:
    job_id, shard_id = new_id("job-elsewhere-"), new_id("vision-elsewhere-")

    async def foreign() -> str:
        async with runtime(settings, engine, slow_standin) as rt:
            batch = await create_batch(rt, tmp_path, job_id, shard_id, ["lot-0"])
            await reconcile(rt)
            return str(batch["id"])

    batch_id = asyncio.run(foreign())
    assert batch_status(slow_standin, batch_id) in {"validating", "in_progress"}
    with engine.connect() as conn:
        assert store.shard(conn, shard_id) is None


def test_finished_jobs_work_rows_are_pruned_after_the_retention_and_open_ones_kept(
        engine: Engine) -> None:
    old, recent = utc_now() - timedelta(days=20), utc_now()
    jobs = {name: new_id(f"job-{name}-") for name in ("finished", "open", "recent", "batch-running",
                                                      "collected", "collected-by-place", "queued")}
    for job_id in jobs.values():
        submit_lots(engine, job_id, ["a", "b"])
    with engine.begin() as conn:
        def settle(job_id: str, when: datetime, lot_ids: tuple[str, ...] = ("lot-0", "lot-1"),
                   status: str = store.DONE, shard_id: str | None = None) -> None:
            conn.execute(update(stage_lots).where(stage_lots.c.job_id == job_id,
                                                  stage_lots.c.lot_id.in_(lot_ids))
                         .values(status=status, shard_id=shard_id, updated_at=when))

        settle(jobs["finished"], old)
        settle(jobs["open"], old, ("lot-0",))
        settle(jobs["recent"], recent)
        settle(jobs["batch-running"], old)
        conn.execute(stage_shards.insert().values(
            shard_id=new_id("vision-"), stage="vision", job_id=jobs["batch-running"], client_id="c1",
            attempt=1, status="submitted", batch_id="batch_x", lot_count=2))
        # Succeeded lots stay `submitted` in their shard: its being collected settled them.
        collected = new_id("vision-")
        conn.execute(stage_shards.insert().values(
            shard_id=collected, stage="vision", job_id=jobs["collected"], client_id="c1",
            attempt=1, status="collected", batch_id="batch_y", lot_count=2, updated_at=old))
        settle(jobs["collected"], old, status=store.SUBMITTED, shard_id=collected)
        # Lots taken by place stay waiting at their claimed places: collected, they are settled.
        by_place = new_id("vision-")
        queued = store.next_in_queue(conn, "vision", jobs["collected-by-place"], 10, VisionWork)
        store.create_shard(conn, "vision", by_place, [lot for _, lot in queued], 0,
                           (queued[0][0], queued[-1][0]))
        store.close_shard(conn, by_place, "collected", "completed")
        conn.execute(update(stage_shards).where(stage_shards.c.shard_id == by_place).values(updated_at=old))
        # Lots waiting for a shard are open however old.
        conn.execute(update(stage_lots).where(stage_lots.c.job_id.in_(
            [jobs["collected-by-place"], jobs["queued"]])).values(updated_at=old))
    postgres_prune.prune(engine, "vision", utc_now() - timedelta(days=15), limit=10_000)

    left = {name for name, job_id in jobs.items() if lot_statuses(engine, "vision", job_id)}
    assert left == {"open", "recent", "batch-running", "queued"}




def test_a_job_cancelled_before_any_lot_reached_the_stage_is_pruned_after_the_retention(
        engine: Engine) -> None:
    # A stage hears of every cancelled job, often before any of its lots reaches it (the translator,
    # before a lot is described): that row had no lots to join and was kept for good.
    old, kept = new_id("job-cancelled-old-"), new_id("job-cancelled-recent-")
    with engine.begin() as conn:
        store.cancel_job(conn, "vision", old)
        store.cancel_job(conn, "vision", kept)
        conn.execute(update(stage_jobs).where(stage_jobs.c.job_id == old)
                     .values(updated_at=utc_now() - timedelta(days=20)))
    postgres_prune.prune(engine, "vision", utc_now() - timedelta(days=15), limit=10_000)
    with engine.begin() as conn:
        rows = conn.execute(select(stage_jobs.c.job_id).where(stage_jobs.c.job_id.in_([old, kept])))
        left = set(rows.scalars())
    assert left == {kept}


def test_finished_jobs_are_deleted_a_few_at_a_time_each_in_a_transaction_of_its_own(
        engine: Engine) -> None:
    # One DELETE took all the jobs of a round (100: up to 5 million rows of 50,000-lot jobs): past
    # the workers' statement_timeout it rolled back, and every round tried the same again while the
    # stage's tables grew unseen; one transaction for all held their locks as long (found by
    # review). Each transaction now takes a few jobs.
    job_ids = [new_id("job-bulk-") for _ in range(postgres_prune.JOBS_PER_DELETE * 2 + 3)]
    for job_id in job_ids:
        submit_lots(engine, job_id, ["a"])
    deleting: list[str] = []  # each transaction's DELETE statements' parameters, one string

    def noted(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.startswith("DELETE FROM stage_lots"):
            deleting.append(str(parameters))
        elif statement.startswith("DELETE FROM stage_jobs"):
            deleting[-1] += str(parameters)

    with engine.begin() as conn:
        conn.execute(update(stage_lots).where(stage_lots.c.job_id.in_(job_ids))
                     .values(status=store.DONE, updated_at=utc_now() - timedelta(days=20)))
    commits: list[int] = []

    def committed(conn: Any) -> None:
        commits.append(len(deleting))

    event.listen(engine, "before_cursor_execute", noted)
    event.listen(engine, "commit", committed)
    try:
        pruned = postgres_prune.prune(engine, "vision", utc_now() - timedelta(days=15), limit=10_000)
    finally:
        event.remove(engine, "before_cursor_execute", noted)
        event.remove(engine, "commit", committed)
    assert pruned >= len(job_ids)
    assert not any(lot_statuses(engine, "vision", job_id) for job_id in job_ids)
    assert len(deleting) >= 3
    assert all(sum(job_id in parameters for job_id in job_ids) <= postgres_prune.JOBS_PER_DELETE
               for parameters in deleting), deleting
    assert commits[-len(deleting):] == list(range(1, len(deleting) + 1))  # a commit after each
