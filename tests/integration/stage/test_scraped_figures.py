"""The stage's figures on /metrics, read from PostgreSQL at scrape time (`stage/figures.py`): what
LotLensOpenAIQueueHeld reads of a replica busy in a long round is the row's, not that replica's
last read, and a reading behind a locked table gives up within seconds."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from lotlens_common.stage.adapters import postgres_store
from lotlens_common.stage.adapters.postgres_store import PostgresWorkStore
from lotlens_common.stage.figures import StageFiguresCollector
from lotlens_common.stage.work import VisionWork

pytestmark = pytest.mark.integration


def _replica_metrics(store: PostgresWorkStore[VisionWork]) -> CollectorRegistry:
    """A replica's /metrics registry, its stage's figures read at every scrape."""
    collector = StageFiguresCollector()
    collector.watch("vision", store.figures, fresh_s=0)
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
