"""Graceful stops, as Kubernetes gives them (rolling restarts, KEDA's scale-in): SIGTERM to each
service of a chaos stack, idle and while a workload runs; each must exit 0 by itself within its
pod's grace period, and every invariant of the chaos run must hold afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.run import Plan, run_seeds
from chaos.stack import CONSUMERS, ChaosStack
from tests.conftest import Infra
from tests.stack_health import wait_healthy

pytestmark = pytest.mark.e2e

SERVICES = {"gateway", *CONSUMERS}


@pytest.fixture(scope="module")
def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    """A chaos stack (no proxies) for this module's tests."""
    running = ChaosStack(infra.database_url, tmp_path_factory.mktemp("graceful") / "stack")
    try:
        running.up()
        yield running
    finally:
        running.down()
        running.drop()


def test_every_service_stops_by_itself_within_its_grace_when_idle(stack: ChaosStack) -> None:
    for name in ["gateway", *(f"{consumer}-1" for consumer in CONSUMERS)]:
        shutdown = stack.terminate(name)
        print(f"{name}: stopped in {shutdown.seconds:.1f} s, exit {shutdown.returncode}")  # measured
        stack.start(name)
        assert shutdown.violation() is None
    wait_healthy(stack.url, stack.processes, stack.log_tail)  # restarted, for the next test
    assert stack.revive() == []


def test_a_seeded_run_of_graceful_stops_of_every_service_breaks_no_invariant(
        infra: Infra, tmp_path: Path) -> None:
    # Seed 1's five faults are the deck's first round: SIGTERM to each of the five services, while
    # the seed's jobs, synchronous calls, cancellations and webhooks go on.
    plan = Plan(fault_count=5, kinds=("sigterm",), jobs=4, max_lots=300, settle_s=300)
    [result] = run_seeds([1], infra.database_url, tmp_path, plan)
    print(f"stops: {[(s.instance, round(s.seconds, 1), s.returncode) for s in result.shutdowns]}")
    assert {s.service for s in result.shutdowns} == SERVICES
    assert result.violations == [], (
        "rerun: make chaos CHAOS_ARGS='--seed 1 --seeds 1 --faults 5 --kinds sigterm --jobs 4 "
        "--max-lots 300'\n" + "\n".join(result.violations))
