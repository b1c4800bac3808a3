"""The chaos schedule: a seed replays the same faults and workload, and `make chaos`'s default 20
seeds inject every (kind, target) the issue lists and jobs from 2 to 5,000 lots."""

from __future__ import annotations

from chaos.__main__ import arguments, kinds
from chaos.schedule import faults, workload

SERVICES = ("gateway", "result-store", "vision-batcher", "translator", "webhook-dispatcher")
CONSUMER_INSTANCES = {f"{c}-{i}" for c in SERVICES[1:] for i in (1, 2)}
# Written out here rather than derived from chaos.schedule, so a kind or target dropped there fails.
EXPECTED = (
    {(kind, service) for kind in ("kill9", "sigstop") for service in SERVICES}
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
    # Both instances of each consumer are killed and paused.
    for kind in ("kill9", "sigstop"):
        assert {f.target for f in drawn if f.kind == kind} >= CONSUMER_INSTANCES


def test_twenty_default_seeds_submit_jobs_of_2_to_5000_lots() -> None:
    sizes = [job.lots for seed in SEEDS for job in workload(seed, DEFAULTS.jobs, DEFAULTS.max_lots)]
    assert min(sizes) == 2 and max(sizes) == 5000
    # One large job on a few seeds, not on every one (20 seeds must fit in 30 minutes).
    assert 1 <= sizes.count(5000) <= 3
