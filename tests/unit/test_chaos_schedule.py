"""The chaos schedule: a seed replays the same faults and workload, and `make chaos`'s default 20
seeds inject every (kind, target) the issue lists and jobs from 2 to 5,000 lots."""

from __future__ import annotations

from chaos.__main__ import arguments, kinds
from chaos.schedule import faults, workload
from chaos.shutdown import Shutdown, grace_seconds

SERVICES = ("gateway", "result-store", "vision-batcher", "translator", "webhook-dispatcher")
CONSUMER_INSTANCES = {f"{c}-{i}" for c in SERVICES[1:] for i in (1, 2)}
# Written out here rather than derived from chaos.schedule, so a kind or target dropped there fails.
EXPECTED = (
    {(kind, service) for kind in ("kill9", "sigstop", "sigterm") for service in SERVICES}
    | {(kind, kind) for kind in ("kafka-restart", "pg-restart", "standin-restart")}
    | {(kind, upstream) for kind in ("net-latency", "net-reset", "net-timeout", "net-bandwidth")
       for upstream in ("kafka", "postgres", "standin")}
)
DEFAULTS = arguments().parse_args([])  # `make chaos` without CHAOS_ARGS
SEEDS = range(DEFAULTS.seed, DEFAULTS.seed + DEFAULTS.seeds)


def test_a_seed_replays_the_same_faults_and_workload() -> None:
    every = kinds(None)
    assert faults(7, 3, every) == faults(7, 3, every)
    assert workload(7, 6, 5000) == workload(7, 6, 5000)
    assert faults(7, 3, every) != faults(8, 3, every)


def test_twenty_default_seeds_inject_every_kind_on_every_target() -> None:
    every = kinds(DEFAULTS.kinds)
    drawn = [f for seed in SEEDS for f in faults(seed, DEFAULTS.faults, every)]
    covered = {(f.kind, f.label.split(":")[-1]) for f in drawn}
    assert covered == EXPECTED
    # Both instances of each consumer are killed, paused and stopped.
    for kind in ("kill9", "sigstop", "sigterm"):
        assert {f.target for f in drawn if f.kind == kind} >= CONSUMER_INSTANCES


def test_twenty_default_seeds_submit_jobs_of_2_to_5000_lots() -> None:
    sizes = [job.lots for seed in SEEDS for job in workload(seed, DEFAULTS.jobs, DEFAULTS.max_lots)]
    assert min(sizes) == 2 and max(sizes) == 5000
    # One large job on a few seeds, not on every one (20 seeds must fit in 30 minutes).
    assert 1 <= sizes.count(5000) <= 3


def test_a_sigterm_gets_the_grace_period_of_its_services_pod() -> None:
    # terminationGracePeriodSeconds in deploy/k8s/base, less the gateway's 5 s preStop pause.
    assert {service: grace_seconds(service) for service in SERVICES} == {
        "gateway": 325, "result-store": 60, "vision-batcher": 120, "translator": 120,
        "webhook-dispatcher": 120}


def test_a_stop_past_its_grace_or_with_a_non_zero_exit_is_a_violation() -> None:
    assert Shutdown("translator-1", "translator", 120, 0.4, 0).violation() is None
    killed = Shutdown("translator-1", "translator", 120, 120, None)
    assert "still running 120 s after SIGTERM" in str(killed.violation())
    assert "exited -15" in str(Shutdown("gateway", "gateway", 55, 0.6, -15).violation())
