"""One short seeded chaos run inside `make test` (the full schedule is `make chaos`): kill -9 and
SIGSTOP of seeded service instances while a mixed workload runs, then every invariant. It runs on
the tier's shared stack (tests/chaos/conftest.py), first, as `make chaos` runs its seeds."""

from __future__ import annotations

import pytest

from chaos.run import Plan, RunResult, run_seeds_on
from chaos.stack import ChaosStack

pytestmark = pytest.mark.e2e

SEED = 3


def test_a_seeded_chaos_run_breaks_no_invariant(chaos_stack: ChaosStack) -> None:
    # Process faults only (the run has a broker of its own, but restarting the shared database would
    # hit the rest of the session; `make chaos` covers the other kinds).
    plan = Plan(fault_count=2, kinds=("kill9", "sigstop"), jobs=4, max_lots=50, settle_s=300)
    results: list[RunResult] = []
    run_seeds_on(chaos_stack, [SEED], plan, results)
    [result] = results
    print(f"recovery seconds by fault: {result.recovery_s}")  # measured, not asserted
    assert {f.kind for f in result.faults} == {"kill9", "sigstop"}
    assert result.violations == [], (
        f"rerun: make chaos CHAOS_ARGS='--seed {SEED} --seeds 1 --faults 2 --kinds kill9,sigstop "
        f"--jobs 4 --max-lots 50'\n" + "\n".join(result.violations))
