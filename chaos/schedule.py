"""A seeded fault schedule: the same seed gives the same faults, targets, pauses and workload."""

from __future__ import annotations

import random
from dataclasses import dataclass

from chaos.network import TOXICS, UPSTREAMS
from chaos.stack import CONSUMERS, service_of

PROCESS_KINDS = ("kill9", "sigstop", "sigterm")
INFRA_KINDS = ("kafka-restart", "pg-restart", "standin-restart")
NETWORK_KINDS = tuple(TOXICS)
ALL_KINDS = PROCESS_KINDS + INFRA_KINDS + NETWORK_KINDS
SERVICES = ("gateway", *CONSUMERS)
DEFAULT_FAULTS_PER_SEED = 3
# Every `LARGE_JOB_EVERY`-th seed's first job has `--max-lots` lots (the run's largest); the other
# seeds' first job is medium. A 5,000-lot job keeps its seed busy for minutes (its batches, then
# its invariants): on more seeds, 20 seeds would outlast 30 minutes.
LARGE_JOB_EVERY = 10
MEDIUM_LOTS = (100, 250, 500)
SMALL_LOTS = (2, 3, 5, 8, 20, 50)


@dataclass(frozen=True)
class Fault:
    """One fault: what, on which process or upstream, held for how long, after how long a calm."""

    kind: str
    target: str
    hold_s: float
    calm_s: float

    @property
    def label(self) -> str:
        """`kind` for infrastructure faults, `kind:service` for process faults, `kind:upstream` for
        network faults."""
        return self.kind if self.kind in INFRA_KINDS else f"{self.kind}:{service_of(self.target)}"


@dataclass(frozen=True)
class JobPlan:
    """One job of the workload: its size, languages, webhook behaviour, cancelled or not."""

    lots: int
    languages: tuple[str, ...]
    webhook: str  # ok | flaky | gone | slow | silent
    cancel: bool


def combinations(kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every (kind, target) the kinds can inject: process faults on each service, network faults
    on each upstream, an infrastructure fault on its own part."""
    found: list[tuple[str, str]] = []
    for kind in kinds:
        targets = SERVICES if kind in PROCESS_KINDS else UPSTREAMS if kind in NETWORK_KINDS else (kind,)
        found += [(kind, target) for target in targets]
    return found


def faults(seed: int, count: int, kinds: tuple[str, ...]) -> list[Fault]:
    """`count` faults for a seed, dealt from an endless deck of every (kind, target) combination.

    Seed `s` takes the deck's slots `(s-1)*count` onwards; each round of the deck holds every
    combination once, in an order shuffled per round, so any `len(deck)` consecutive slots cover
    every combination (with the defaults: 25 combinations, seeds 1-9 cover each once, 1-17 twice)
    while a seed's faults still look random and a seed run alone draws the same faults. Round `r`
    hits consumer instance `r % 2 + 1`, so successive rounds hit both instances of each consumer;
    holds and calms come from the seed.
    """
    deck = combinations(kinds)
    rng = random.Random(f"faults-{seed}")
    chosen = []
    for n in range(count):
        rnd, place = divmod((seed - 1) * count + n, len(deck))
        kind, target = random.Random(f"deck-{rnd}").sample(deck, len(deck))[place]
        if target in CONSUMERS:
            target = f"{target}-{rnd % 2 + 1}"
        chosen.append(
            Fault(kind, target, hold_s=round(rng.uniform(1, 6), 1), calm_s=round(rng.uniform(1, 4), 1))
        )
    return chosen


def workload(seed: int, jobs: int, max_lots: int) -> list[JobPlan]:
    """`jobs` jobs: the first large (`max_lots`) on every `LARGE_JOB_EVERY`-th seed and medium
    otherwise, the second of 2 lots, the rest small; some cancelled."""
    rng = random.Random(f"workload-{seed}")
    plans = []
    for n in range(jobs):
        first = max_lots if seed % LARGE_JOB_EVERY == 0 else rng.choice(MEDIUM_LOTS)
        size = first if n == 0 else 2 if n == 1 else rng.choice(SMALL_LOTS)
        plans.append(
            JobPlan(
                lots=min(size, max_lots),
                languages=tuple(rng.sample(["en", "de", "fr", "ru"], rng.randint(1, 3))),
                webhook=rng.choice(["ok", "ok", "flaky", "gone", "slow", "silent"]),
                cancel=n > 0 and rng.random() < 0.15,
            )
        )
    return plans
