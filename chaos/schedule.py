"""A seeded fault schedule: the same seed gives the same faults, targets, pauses and workload."""

from __future__ import annotations

import random
from dataclasses import dataclass

from chaos.network import TOXICS, UPSTREAMS
from chaos.stack import CONSUMERS

# Every kind `make chaos` injects; a run covers a seeded subset, 20 seeds cover them all.
PROCESS_KINDS = ("kill9", "sigstop")
INFRA_KINDS = ("kafka-restart", "pg-restart", "standin-restart")
NETWORK_KINDS = tuple(TOXICS)


@dataclass(frozen=True)
class Fault:
    """One fault: what, on which process, held for how long, after how long a calm."""

    kind: str
    target: str
    hold_s: float
    calm_s: float

    @property
    def label(self) -> str:
        """`kind` for infrastructure faults, `kind:service` for process faults, `kind:upstream` for
        network faults."""
        service = self.target.rsplit("-", 1)[0] if self.target[-1].isdigit() else self.target
        return self.kind if self.kind in INFRA_KINDS else f"{self.kind}:{service}"


@dataclass(frozen=True)
class JobPlan:
    """One job of the workload: its size, languages, webhook behaviour, cancelled or not."""

    lots: int
    languages: tuple[str, ...]
    webhook: str  # ok | flaky | gone | slow | silent
    cancel: bool


def faults(seed: int, count: int, kinds: tuple[str, ...]) -> list[Fault]:
    """`count` faults drawn from `kinds`; seed `s` starts at kind `s` so consecutive seeds rotate
    through every kind."""
    rng = random.Random(f"faults-{seed}")
    targets = ["gateway", *(f"{c}-{i}" for c in CONSUMERS for i in (1, 2))]
    chosen = []
    for n in range(count):
        kind = kinds[(seed * count + n) % len(kinds)]
        target = (
            rng.choice(targets)
            if kind in PROCESS_KINDS
            else rng.choice(UPSTREAMS)
            if kind in NETWORK_KINDS
            else kind
        )
        chosen.append(
            Fault(kind, target, hold_s=round(rng.uniform(1, 6), 1), calm_s=round(rng.uniform(1, 4), 1))
        )
    return chosen


def workload(seed: int, jobs: int, max_lots: int) -> list[JobPlan]:
    """`jobs` jobs of 2 to `max_lots` lots (mostly small, one large), some cancelled."""
    rng = random.Random(f"workload-{seed}")
    plans = []
    for n in range(jobs):
        size = max_lots if n == 0 else rng.choice([2, 3, 5, 8, 20, 50])
        plans.append(
            JobPlan(
                lots=min(size, max_lots),
                languages=tuple(rng.sample(["en", "de", "fr", "ru"], rng.randint(1, 3))),
                webhook=rng.choice(["ok", "ok", "flaky", "gone", "slow", "silent"]),
                cancel=n > 0 and rng.random() < 0.15,
            )
        )
    return plans
