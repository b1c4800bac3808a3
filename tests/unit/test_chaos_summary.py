"""The run's summary: a fault that did not fire (a quiet link) is listed with its reason, counted
apart from the injected ones and from the violations; a run in which no fault fired fails."""

from __future__ import annotations

from chaos.__main__ import not_fired, proved_nothing, table
from chaos.run import RunResult
from chaos.schedule import Fault

QUIET = ("net-reset:standin", "no traffic passed through its proxy while the toxic was on")


def _seed(*, fired: bool) -> RunResult:
    faults = [Fault("net-reset", "standin", hold_s=2, calm_s=1),
              Fault("kill9", "gateway", hold_s=2, calm_s=1)]
    result = RunResult(seed=1, faults=faults if fired else faults[:1], not_fired=[QUIET])
    if fired:
        result.recovery_s, result.probe_s = [("kill9:gateway", 1.5)], [("kill9:gateway", 4.0)]
    return result


def test_a_fault_that_did_not_fire_is_listed_apart_not_as_injected_nor_as_a_violation() -> None:
    summary = table([_seed(fired=True)]).splitlines()
    assert "| net-reset:standin | 0 | 1 | 0 | - | - | - | - |" in summary
    assert "| kill9:gateway | 1 | 0 | 0 | 1.5 | 1.5 | 4.0 | 4.0 |" in summary
    assert summary[-1] == "1 seeds, 2 faults (1 not fired), 0 violations"
    assert not_fired([_seed(fired=True)]) == (
        "- seed 1: net-reset:standin not fired: no traffic passed through its proxy while the toxic was on")


def test_a_run_in_which_no_fault_fired_proved_nothing() -> None:
    assert proved_nothing([_seed(fired=False)])
    assert not proved_nothing([_seed(fired=True)])
