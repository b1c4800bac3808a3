"""The batching rule decides when a job's waiting lots become an OpenAI batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lotlens_common.stage.rule import Flush, WaitingJob, plan_flushes

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def job(job_id: str, waiting: int, arrived: int, expected: int, age_s: float = 0.0,
        tokens: int = 1000) -> WaitingJob:
    return WaitingJob(job_id, waiting, arrived, expected, NOW - timedelta(seconds=age_s), tokens)


def test_a_job_whose_lots_have_all_arrived_is_flushed_at_once() -> None:
    assert plan_flushes([job("a", 3, 3, 3)], NOW, 30, 50_000, 0, 0) == [Flush("a", 3)]


def test_a_job_still_receiving_lots_waits_for_the_window() -> None:
    assert plan_flushes([job("a", 10, 10, 100, age_s=5)], NOW, 30, 50_000, 0, 0) == []


def test_a_partial_job_is_flushed_when_the_window_has_passed() -> None:
    assert plan_flushes([job("a", 10, 10, 100, age_s=31)], NOW, 30, 50_000, 0, 0) == [Flush("a", 10)]


def test_a_full_batch_is_sent_without_waiting_and_never_exceeds_the_request_limit() -> None:
    assert plan_flushes([job("a", 120_000, 120_000, 200_000)], NOW, 30, 50_000, 0, 0) == [
        Flush("a", 50_000)]


def test_oldest_jobs_go_first() -> None:
    plan = plan_flushes([job("new", 2, 2, 2, age_s=1), job("old", 2, 2, 2, age_s=9)], NOW, 30, 10, 0, 0)
    assert [flush.job_id for flush in plan] == ["old", "new"]


def test_lots_wait_when_the_enqueued_token_budget_is_full() -> None:
    assert plan_flushes([job("a", 5, 5, 5)], NOW, 30, 100, tokens_enqueued=10_000,
                        token_limit=10_000) == []


def test_a_batch_is_cut_to_what_the_token_budget_allows() -> None:
    plan = plan_flushes([job("a", 50, 50, 50, tokens=1000), job("b", 5, 5, 5, tokens=1000)],
                        NOW, 30, 100, tokens_enqueued=0, token_limit=20_000)
    assert plan == [Flush("a", 20)]
