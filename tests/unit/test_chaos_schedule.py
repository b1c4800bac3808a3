"""The chaos schedule: a seed replays the same faults, and `make chaos`'s 20 seeds cover every kind."""

from __future__ import annotations

from chaos.__main__ import kinds
from chaos.network import UPSTREAMS
from chaos.schedule import INFRA_KINDS, NETWORK_KINDS, PROCESS_KINDS, faults, workload


def test_a_seed_replays_the_same_faults_and_workload() -> None:
    every = kinds(None)
    assert faults(7, 3, every) == faults(7, 3, every)
    assert workload(7, 6, 5000) == workload(7, 6, 5000)
    assert faults(7, 3, every) != faults(8, 3, every)


def test_twenty_seeds_of_three_faults_inject_every_kind() -> None:
    every = kinds(None)
    assert set(every) == set(PROCESS_KINDS + INFRA_KINDS + NETWORK_KINDS)
    injected = {f.kind for seed in range(1, 21) for f in faults(seed, 3, every)}
    assert injected == set(every)


def test_network_faults_sit_in_front_of_postgres_or_the_standin() -> None:
    chosen = [f for seed in range(1, 21) for f in faults(seed, 3, NETWORK_KINDS)]
    assert {f.target for f in chosen} == set(UPSTREAMS)
    assert all(f.label == f"{f.kind}:{f.target}" for f in chosen)
