"""The stage's counters: every label set exists at 0 from start-up (alerts take `increase()` of
them), and a failure is counted under what failed, OpenAI by its kind or the stage's own round."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.exc import OperationalError

from lotlens_common import ops
from lotlens_common.model.errors import ERROR_KINDS, ModelRateLimitedError
from lotlens_common.producer import PublishError
from lotlens_common.stage import metrics, submit
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.runner import run_stage_loop
from tests.conftest import new_id
from tests.unit.stage.conftest import World, lots
from tests.unit.test_metric_series import ONE_OF_EACH_KIND, no_new_series, series


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def exported(name: str, stage: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The stage's samples of a counter: their other labels, and their values."""
    return {tuple(sorted((k, v) for k, v in labels if k != "stage")): value(name, **dict(labels))
            for labels in series(name) if dict(labels)["stage"] == stage}


def test_a_stage_exports_its_error_and_orphan_counters_at_zero_from_start(world: World) -> None:
    # A name no other test counts under: what their failures created must not stand in for start's.
    # (The series of the second counter checked were all created by the first check's events: a
    # start that forgot them passed.)
    name = new_id("vision-")
    world.restart(name=name)
    stop = threading.Event()
    stop.set()
    run_stage_loop(world.stage, stop)  # the service's start, then its stop at once

    assert exported("lotlens_stage_round_failures_total", name) == {
        (("step", operation),): 0.0 for operation in metrics.OPERATIONS}
    assert exported("lotlens_openai_errors_total", name) == {
        (("kind", kind), ("operation", operation)): 0.0
        for operation in metrics.OPERATIONS for kind in ERROR_KINDS}
    assert exported("lotlens_openai_batches_reconciled_total", name) == {
        (("action", action),): 0.0 for action in metrics.RECONCILE_ACTIONS}

    def every_openai_error() -> None:
        for operation in metrics.OPERATIONS:
            for exc in ONE_OF_EACH_KIND:
                metrics.openai_error(name, operation, exc)

    def every_own_failure() -> None:
        for operation in metrics.OPERATIONS:
            metrics.openai_error(name, operation, RuntimeError("a defect"))

    def every_action() -> None:
        for action in metrics.RECONCILE_ACTIONS:
            metrics.BATCHES_RECONCILED.labels(stage=name, action=action).inc()

    no_new_series("lotlens_openai_errors_total", every_openai_error)
    no_new_series("lotlens_stage_round_failures_total", every_own_failure)
    no_new_series("lotlens_openai_batches_reconciled_total", every_action)


def test_a_batch_read_refused_for_its_rate_is_counted_as_rate_limited(world: World) -> None:
    world.batches.finish = None
    world.store.add(lots(2))
    world.rounds()
    labels = {"stage": "vision", "operation": "batches"}
    before = {kind: value("lotlens_openai_errors_total", **labels, kind=kind)
              for kind in ("rate_limited", "unavailable")}
    world.batches.errors["retrieve"] = [ModelRateLimitedError("Rate limit reached for requests")]
    world.rounds()
    assert value("lotlens_openai_errors_total", **labels, kind="rate_limited") == before["rate_limited"] + 1
    assert value("lotlens_openai_errors_total", **labels, kind="unavailable") == before["unavailable"]


def test_a_round_failing_on_the_database_is_no_openai_error(world: World, tmp_path: Path) -> None:
    stop = threading.Event()
    world.settings = StageSettings(window_s=0.0, poll_interval_s=0.01, work_dir=str(tmp_path))
    world.restart()

    def database_down(cancelled_only: bool = False) -> list[object]:
        stop.set()
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    world.store.waiting_jobs = database_down  # type: ignore[method-assign, assignment]
    openai_before = sum(value("lotlens_openai_errors_total", stage="vision", operation="loop", kind=kind)
                        for kind in ("other", "unavailable", "timeout"))
    round_before = value("lotlens_stage_round_failures_total", stage="vision", step="loop")
    run_stage_loop(world.stage, stop)
    assert value("lotlens_stage_round_failures_total", stage="vision", step="loop") == round_before + 1
    assert sum(value("lotlens_openai_errors_total", stage="vision", operation="loop", kind=kind)
               for kind in ("other", "unavailable", "timeout")) == openai_before


def test_a_long_round_beats_for_the_liveness_probe_as_it_goes(world: World,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage's loop beat only between rounds: a shard whose image checks took over 600 s (many
    slow hosts) had its pod restarted by the liveness probe mid-round, and recovery started the
    same checks again, for good."""
    beats: list[str] = []
    monkeypatch.setattr(ops.HEARTBEATS, "beat", beats.append)
    monkeypatch.setattr(submit, "PREPARE_CHUNK", 2)
    world.store.add(lots(6))
    asyncio.run(submit.flush_due(world.stage))
    assert beats.count("stage:vision") >= 3  # once a chunk of lots prepared


def test_a_batch_kafka_will_not_record_is_counted_as_a_round_failure_each_time(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Kafka refused the stage's VisionBatchSubmitted (an ACL, too few in-sync replicas): each round
    # and each recovery created or adopted the batch at OpenAI, failed to record it and only logged
    # so; no counter moved, LotLensStageRoundsFailing stayed quiet while the lots waited.
    def refused(client_id: str, events: object) -> None:
        raise PublishError("Kafka did not acknowledge: Broker: Not enough in-sync replicas")

    monkeypatch.setattr(world.publisher, "publish", refused)
    world.store.add(lots(2))
    before = value("lotlens_stage_round_failures_total", stage="vision", step="batches")
    world.rounds()
    assert value("lotlens_stage_round_failures_total", stage="vision", step="batches") == before + 1
    world.housekeep()
    assert value("lotlens_stage_round_failures_total", stage="vision", step="batches") == before + 2
    assert world.submitted() == [] and len(world.batches.batches) == 1, "adopted, not created again"
