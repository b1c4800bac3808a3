"""One short seeded chaos run inside `make test` (the full schedule is `make chaos`): kill -9 and
SIGSTOP of seeded service instances while a mixed workload runs, then every invariant."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.run import Plan, run_seeds
from tests.conftest import Infra

pytestmark = pytest.mark.e2e

SEED = 3


def test_a_seeded_chaos_run_breaks_no_invariant(infra: Infra, tmp_path: Path) -> None:
    # Process faults only (the run has a broker of its own, but restarting the shared database would
    # hit the rest of the session; `make chaos` covers the other kinds).
    plan = Plan(fault_count=2, kinds=("kill9", "sigstop"), jobs=4, max_lots=50, settle_s=300)
    [result] = run_seeds([SEED], infra.database_url, tmp_path, plan)
    print(f"recovery seconds by fault: {result.recovery_s}")  # measured, not asserted
    assert {f.kind for f in result.faults} == {"kill9", "sigstop"}
    # A run whose jobs were all refused, or whose sync calls all erred, checked nothing.
    assert result.jobs > 0 and result.sync_ok > 0, f"{result.jobs} jobs, {result.sync_ok} sync"
    assert result.violations == [], (
        f"rerun: make chaos CHAOS_ARGS='--seed {SEED} --seeds 1 --faults 2 --kinds kill9,sigstop "
        f"--jobs 4 --max-lots 50'\n" + "\n".join(result.violations))
