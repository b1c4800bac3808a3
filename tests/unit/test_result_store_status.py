"""The job life cycle only moves forward, and a job settles once every lot is accounted for."""

from __future__ import annotations

import pytest

from lotlens_result_store.status import (
    JOB_RANK,
    JobProgress,
    Settlement,
    advance_job,
    is_terminal_job,
    job_rank,
    rank_sql,
    settle,
)


@pytest.mark.parametrize(("current", "proposed", "expected"), [
    ("pending", "processing", "processing"),
    ("processing", "translating", "translating"),
    ("translating", "processing", "translating"),
    ("translating", "pending", "translating"),
    ("pending", "cancelled", "cancelled"),
    ("translating", "completed", "completed"),
])
def test_a_job_status_only_moves_forward(current: str, proposed: str, expected: str) -> None:
    assert advance_job(current, proposed) == expected


@pytest.mark.parametrize("terminal", ["completed", "failed", "cancelled"])
@pytest.mark.parametrize("proposed", ["pending", "processing", "translating", "completed", "failed",
                                      "cancelled"])
def test_nothing_moves_a_job_out_of_a_terminal_status(terminal: str, proposed: str) -> None:
    assert advance_job(terminal, proposed) == terminal


def test_the_ranks_follow_the_documented_life_cycle() -> None:
    assert job_rank("pending") < job_rank("processing") < job_rank("translating") < job_rank("completed")
    assert job_rank("completed") == job_rank("failed") == job_rank("cancelled")
    assert all(is_terminal_job(s) for s in ("completed", "failed", "cancelled"))
    assert not any(is_terminal_job(s) for s in ("pending", "processing", "translating"))


def test_an_unknown_status_is_treated_as_terminal_so_it_is_never_overwritten() -> None:
    assert advance_job("archived", "processing") == "archived"


def test_the_sql_rank_expression_names_every_status() -> None:
    expression = rank_sql("j.status")
    assert all(f"'{status}' THEN {rank}" in expression for status, rank in JOB_RANK.items())


def progress(total: int | None, processed: int, failed: int, submitted: int | None = None,
             undescribed: int = 0) -> JobProgress:
    return JobProgress(total, processed, failed, total or 0 if submitted is None else submitted,
                       undescribed)


def test_a_job_with_lots_still_running_does_not_settle() -> None:
    assert settle(progress(3, 1, 1)) is None


def test_a_job_of_unknown_size_does_not_settle() -> None:
    assert settle(progress(None, 5, 0, submitted=5)) is None
    assert settle(progress(0, 0, 0)) is None


def test_a_job_with_some_lots_done_completes() -> None:
    assert settle(progress(3, 2, 1)) == Settlement("completed", None)


def test_a_job_whose_every_lot_failed_fails_with_the_reason() -> None:
    assert settle(progress(3, 0, 3)) == Settlement("failed", "all 3 lots failed")


def test_more_settled_lots_than_expected_still_settles() -> None:
    assert settle(progress(2, 3, 0)) == Settlement("completed", None)


def test_a_finished_job_waits_until_every_lot_submission_is_projected() -> None:
    assert settle(progress(3, 3, 0, submitted=2)) is None


def test_a_finished_job_waits_until_every_completed_lot_has_its_vision_result() -> None:
    assert settle(progress(3, 3, 0, undescribed=1)) is None
