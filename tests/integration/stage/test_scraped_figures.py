"""The stage's figures on /metrics, read from PostgreSQL at scrape time (`stage/figures.py`): what
LotLensOpenAIQueueHeld and LotLensOpenAIAuthenticationErrors read of a replica busy in a long round
is the rows', not that replica's last read, and a reading behind a locked table gives up within
seconds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from lotlens_common.settings import ServiceSettings
from lotlens_common.stage.adapters import postgres_release, postgres_store
from lotlens_common.stage.adapters.postgres_store import PostgresWorkStore
from lotlens_common.stage.core.lifecycle import FAIL, RELEASED, RESEND
from lotlens_common.stage.figures import StageFiguresCollector
from lotlens_common.stage.submit import flush_due
from lotlens_common.stage.work import LotWork, TranslationWork, VisionWork
from tests.conftest import new_id
from tests.integration.stage.helpers import enqueue, runtime, submit_lots
from tests.standin import Standin

pytestmark = pytest.mark.integration


def _replica_metrics(store: PostgresWorkStore[Any]) -> CollectorRegistry:
    """A replica's /metrics registry, its stage's figures read at every scrape."""
    collector = StageFiguresCollector()
    collector.watch(store.stage, store.figures, store.lots_waiting, fresh_s=0)
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def _refusals(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("lotlens_stage_queue_refusals_in_a_row", {"stage": "vision"})


def test_a_replica_in_a_long_round_exports_the_series_another_replica_s_admitted_batch_ended(
        engine: Engine) -> None:
    collecting, busy = (PostgresWorkStore(engine, "vision", VisionWork) for _ in range(2))
    busy_metrics = _replica_metrics(busy)
    assert _refusals(busy_metrics) == 0
    collecting.note_queue_refused(time.time() - 5)
    assert _refusals(busy_metrics) == 1  # no round of its own read the row meanwhile
    held = busy_metrics.get_sample_value("lotlens_stage_queue_held_seconds", {"stage": "vision"})
    assert held is not None and 50 < held <= 60
    collecting.note_queue_admitted(time.time() + 1)
    assert _refusals(busy_metrics) == 0


def _claimed(engine: Engine, store: PostgresWorkStore[Any]) -> str:
    """A shard of one new lot of the store's stage, `building` (its id)."""
    job_id, shard_id = new_id("job-"), new_id(f"{store.stage}-")
    work = VisionWork(additional_info="x", image_urls=("https://img.test/1.jpg",), languages=("en",)) \
        if store.stage == "vision" else TranslationWork(english_html="<p>x</p>", languages=("de",))
    with engine.begin() as conn:
        enqueue(conn, store.stage, [LotWork(job_id, new_id("lot-"), "c1", 1, 0, work)])
    assert store.claim(job_id, shard_id, 1, lambda lots: (len(lots), 0))
    return shard_id


def _submitted(engine: Engine, store: PostgresWorkStore[Any], status: str = "in_progress") -> str:
    """A shard of one new lot whose batch was created and last read in `status` (its id)."""
    shard_id = _claimed(engine, store)
    store.record_batch(shard_id, new_id("batch_"), 1, time.time(), 0)
    store.note_batch_status(shard_id, status)
    return shard_id


def test_a_replica_exports_the_pauses_and_batch_statuses_other_replicas_record(engine: Engine) -> None:
    recording, busy = (PostgresWorkStore(engine, "vision", VisionWork) for _ in range(2))
    busy_metrics = _replica_metrics(busy)

    def paused() -> float | None:
        return busy_metrics.get_sample_value("lotlens_stage_paused", {"stage": "vision"})

    def batches(status: str) -> float | None:
        return busy_metrics.get_sample_value("lotlens_openai_batches", {"stage": "vision", "status": status})

    assert (paused(), batches("validating"), batches("in_progress")) == (0, 0, 0)
    submitted = _claimed(engine, recording)
    recording.record_batch(submitted, new_id("batch_"), 1, time.time(), 0)
    recording.note_batch_status(submitted, "in_progress")
    assert (batches("validating"), batches("in_progress")) == (0, 1)
    recording.note_unreadable(submitted, "reading it answered 404; listing the stage's batches failed too")
    assert paused() == 1  # a batch of the stage cannot be read
    assert batches("in_progress") == 0  # nor said to run: OpenAI may have lost it (404)
    recording.note_unreadable(submitted, None)
    assert (paused(), batches("in_progress")) == (0, 1)
    building = _claimed(engine, recording)
    recording.note_quota_refused(building, "insufficient_quota", 60)
    assert paused() == 1  # OpenAI refuses batches for the quota
    recording.end_quota_pause()
    assert paused() == 0
    recording.close_shard(submitted, "collected", "completed")
    assert batches("in_progress") == 0


def test_a_reading_behind_a_locked_table_gives_up_within_its_timeout(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # A migration's lock, or a statement stuck behind one: the reading would wait on it for the
    # workers' five minutes, and its figures stay out of /metrics all along.
    monkeypatch.setattr(postgres_store, "FIGURES_TIMEOUT_MS", 300)
    store = PostgresWorkStore(engine, "vision", VisionWork)
    with engine.connect() as locker:
        locker.execute(text("LOCK TABLE stage_queue_holds IN ACCESS EXCLUSIVE MODE"))
        began = time.monotonic()
        with pytest.raises(OperationalError, match="timeout"):
            store.figures()
        assert time.monotonic() - began < 3
        locker.rollback()
    assert store.figures().held.refusals == 0  # read again once the lock is gone


def test_a_batch_just_created_is_exported_under_the_status_its_create_answered(
        settings: ServiceSettings, engine: Engine, standin: Standin) -> None:
    # Recorded without one, it was under no status of `lotlens_openai_batches` until a watch read it.
    job_id = new_id("job-")
    submit_lots(engine, job_id, ["a"])

    async def created() -> dict[str, Any]:
        async with runtime(settings, engine, standin) as rt:
            [batch] = await flush_due(rt)
            return batch

    batch = asyncio.run(created())
    store = PostgresWorkStore(engine, "vision", VisionWork)
    [shard] = [shard for shard in store.shards("submitted") if shard.job_id == job_id]
    assert (shard.batch_id, shard.batch_status) == (batch["id"], "validating")


def test_only_the_stage_s_own_open_shards_hold_it_paused(engine: Engine) -> None:
    vision = PostgresWorkStore(engine, "vision", VisionWork)
    translation = PostgresWorkStore(engine, "translation", TranslationWork)
    vision_metrics, translation_metrics = _replica_metrics(vision), _replica_metrics(translation)

    def paused(registry: CollectorRegistry, stage: str = "vision") -> float | None:
        return registry.get_sample_value("lotlens_stage_paused", {"stage": stage})

    translation.note_unreadable(_submitted(engine, translation), "reading it answered 404")
    assert paused(translation_metrics, "translation") == 1
    assert paused(vision_metrics) == 0  # another stage's batch: vision submits on
    # A release carried out: the shard is closed and keeps the marks it had (`jobs show` prints
    # them), which hold nothing paused any longer.
    released = _submitted(engine, vision)
    vision.note_unreadable(released, "reading it answered 404")
    with engine.begin() as conn:
        assert postgres_release.release(conn, released, FAIL, "on-call", "the batch is lost")
    assert paused(vision_metrics) == 1
    vision.close_shard(released, "collected", RELEASED)
    assert paused(vision_metrics) == 0
    # A release recorded holds the pause until it is carried out, whatever else clears the
    # unreadable mark (no step does today: `note_unreadable(None)` drops both).
    recorded = _submitted(engine, vision)
    vision.note_unreadable(recorded, "reading it answered 404")
    with engine.begin() as conn:
        assert postgres_release.release(conn, recorded, RESEND, "on-call", "resend it")
        conn.execute(text("UPDATE stage_shards SET unreadable_since = NULL WHERE shard_id = :id"),
                     {"id": recorded})
    assert paused(vision_metrics) == 1


def test_a_lots_waiting_count_cut_short_leaves_the_pause_and_the_batches_exported(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # The quota out for hours: every job's lots pile up waiting, and counting them passes the
    # statement timeout (a lock on the lots stands in for millions of them). Read in one statement
    # with the count, the pause went stale with it after a minute, and LotLensOpenAIAuthenticationErrors
    # resolved while the stage still submitted nothing.
    monkeypatch.setattr(postgres_store, "FIGURES_TIMEOUT_MS", 300)
    store = PostgresWorkStore(engine, "vision", VisionWork)
    _submitted(engine, store)
    store.note_quota_refused(_claimed(engine, store), "insufficient_quota", 3600)
    now = [0.0]  # the collector's clock, moved by the test
    collector = StageFiguresCollector(stale_s=60, clock=lambda: now[0])
    collector.watch("vision", store.figures, store.lots_waiting, fresh_s=5)
    registry = CollectorRegistry()
    registry.register(collector)

    def exported(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"stage": "vision", **labels})

    assert (exported("lotlens_stage_paused"), exported("lotlens_stage_lots_waiting")) == (1, 1)
    with engine.connect() as locker:
        locker.execute(text("LOCK TABLE stage_lots IN ACCESS EXCLUSIVE MODE"))
        now[0] = 61.0  # every count since has been cut short
        assert exported("lotlens_stage_paused") == 1
        assert exported("lotlens_openai_batches", status="in_progress") == 1
        assert exported("lotlens_stage_lots_waiting") is None  # no count rather than a stale one
        locker.rollback()
