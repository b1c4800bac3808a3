"""A job's estimated completion as the API shows it: revised once it has passed, never in the past."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from lotlens_common.read_models import JobView

CREATED = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
JOB = JobView(job_id="job-1", client_id="c", status="processing", api_version="1.0.0", languages=["en"],
              total_lots=100, processed_lots=0, failed_lots=0, images_processed=0, webhook_configured=False,
              error_message=None, created_at=CREATED, updated_at=CREATED,
              estimated_completion=CREATED + timedelta(minutes=30), completed_at=None, cancelled_at=None)


def test_the_first_estimate_stands_until_it_has_passed() -> None:
    assert JOB.expected_completion(CREATED + timedelta(minutes=29)) == CREATED + timedelta(minutes=30)


def test_past_its_estimate_a_job_is_given_the_pace_so_far_over_the_lots_left() -> None:
    job = replace(JOB, processed_lots=15, failed_lots=5)  # a fifth done in 2 h: 8 h more
    now = CREATED + timedelta(hours=2)
    assert job.expected_completion(now) == now + timedelta(hours=8)


def test_with_nothing_done_yet_the_first_span_begins_again() -> None:
    now = CREATED + timedelta(hours=2)
    assert JOB.expected_completion(now) == now + timedelta(minutes=30)


def test_with_every_lot_counted_the_end_is_still_a_little_ahead() -> None:
    job = replace(JOB, status="translating", processed_lots=100)
    now = CREATED + timedelta(hours=2)
    assert job.expected_completion(now) == now + timedelta(minutes=1)


def test_a_job_that_ended_shows_its_end() -> None:
    ended = CREATED + timedelta(minutes=50)
    completed = replace(JOB, status="completed", processed_lots=100, completed_at=ended)
    cancelled = replace(JOB, status="cancelled", cancelled_at=CREATED + timedelta(minutes=5))
    later = CREATED + timedelta(days=3)
    assert completed.expected_completion(later) == ended
    assert cancelled.expected_completion(CREATED + timedelta(minutes=6)) == CREATED + timedelta(minutes=5)
    assert replace(completed, completed_at=None).expected_completion(later) == CREATED + timedelta(minutes=30)


def test_a_stuck_job_is_given_at_most_a_week_ahead() -> None:
    job = replace(JOB, total_lots=50_000, processed_lots=1)
    now = CREATED + timedelta(days=59)  # at this pace: 8,000 years more
    assert job.expected_completion(now) == now + timedelta(days=7)
