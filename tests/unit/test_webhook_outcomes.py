"""What an attempt's outcome means for the delivery and which events record it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lotlens_common.events import WebhookAttempted, WebhookDelivered, WebhookFailed
from lotlens_webhook_dispatcher.delivery import AttemptOutcome
from lotlens_webhook_dispatcher.dispatch_queue import Delivery
from lotlens_webhook_dispatcher.outcomes import (
    INTERRUPTED,
    NOT_STARTED_MIN_DELAY_S,
    RetryPolicy,
    interrupted,
    judge,
    not_started,
)

NOW = datetime(2025, 8, 5, 8, 15, tzinfo=UTC)
POLICY = RetryPolicy((30.0, 60.0, 120.0, 240.0), jitter=0.0, retry_after_cap_s=3600)


def _delivery(attempt: int, **changes: object) -> Delivery:
    fields: dict[str, object] = dict(delivery_id="d-1", job_id="job-1", client_id="acme",
                                     webhook_url="https://hooks.example.com/x", part=1, total_parts=1,
                                     attempt=attempt)
    fields.update(changes)
    return Delivery(**fields)  # type: ignore[arg-type]


def test_a_success_delivers_and_records_the_attempt():
    verdict = judge(_delivery(2), AttemptOutcome(True, 12.3, 200, response_body="ok"), NOW, NOW, POLICY)
    attempted, delivered = verdict.events
    assert verdict.status == "delivered" and verdict.due is None
    assert isinstance(attempted, WebhookAttempted) and attempted.succeeded and attempted.attempt == 2
    assert isinstance(delivered, WebhookDelivered) and delivered.attempts == 2


def test_a_failure_before_the_last_attempt_is_retried_after_its_interval():
    verdict = judge(_delivery(3), AttemptOutcome(False, 5.0, 500, error="HTTP 500"), NOW, NOW, POLICY)
    assert verdict.status == "pending" and verdict.due == NOW + timedelta(seconds=120)
    [attempted] = verdict.events
    assert isinstance(attempted, WebhookAttempted) and attempted.next_attempt_at == verdict.due


def test_the_fifth_failure_gives_the_delivery_up_with_the_last_error():
    verdict = judge(_delivery(5), AttemptOutcome(False, 5.0, 503, error="HTTP 503"), NOW, NOW, POLICY)
    assert verdict.status == "failed"
    attempted, failed = verdict.events
    assert isinstance(attempted, WebhookAttempted) and attempted.next_attempt_at is None
    assert isinstance(failed, WebhookFailed) and failed.attempts == 5 and failed.error == "HTTP 503"


def test_410_gives_up_at_once():
    verdict = judge(_delivery(1), AttemptOutcome(False, 5.0, 410, error="gone", final=True), NOW, NOW, POLICY)
    assert verdict.status == "failed" and isinstance(verdict.events[-1], WebhookFailed)


def test_retry_after_pushes_the_next_attempt_back():
    outcome = AttemptOutcome(False, 5.0, 429, error="HTTP 429", retry_after_s=600)
    assert judge(_delivery(1), outcome, NOW, NOW, POLICY).due == NOW + timedelta(seconds=600)


def test_an_attempt_a_dead_instance_left_is_recorded_as_interrupted_and_the_next_goes_ahead():
    verdict = interrupted(_delivery(3, interrupted_attempt=2, interrupted_at=NOW), NOW)
    assert verdict is not None and verdict.status == "sending"
    [lost] = verdict.events
    assert isinstance(lost, WebhookAttempted) and lost.attempt == 2 and lost.error == INTERRUPTED


def test_a_delivery_interrupted_once_too_often_is_failed_unsent():
    # The claim leaves the attempt number where it was (nothing more is sent): see dispatch_queue.
    verdict = interrupted(_delivery(7, interrupted_attempt=7, interrupted_at=NOW, interruptions=6), NOW)
    assert verdict is not None and verdict.status == "failed"
    assert isinstance(verdict.events[-1], WebhookFailed) and verdict.events[-1].attempts == 7


def test_interrupted_attempts_do_not_count_against_the_schedule():
    failure = AttemptOutcome(False, 5.0, 500, error="HTTP 500")
    # The 6th attempt after one interruption is the 5th sent: the last.
    assert judge(_delivery(6, interruptions=1), failure, NOW, NOW, POLICY).status == "failed"
    # The 4th after one interruption is the 3rd sent: retried after the 3rd interval.
    retried = judge(_delivery(4, interruptions=1), failure, NOW, NOW, POLICY)
    assert retried.status == "pending" and retried.due == NOW + timedelta(seconds=120)


def test_a_fresh_claim_has_nothing_interrupted():
    assert interrupted(_delivery(1), NOW) is None


def test_an_attempt_that_broke_before_its_post_is_due_again_after_the_first_interval_unspent():
    verdict = not_started(NOW, POLICY)
    assert (verdict.status, verdict.events, verdict.due, verdict.spent) == (
        "pending", [], NOW + timedelta(seconds=30), False)


def test_an_attempt_that_broke_before_its_post_never_comes_back_at_once():
    # A first interval of 0 (or none at all) would claim a delivery whose table stays broken in a loop.
    for intervals in ((0.0, 60.0), ()):
        verdict = not_started(NOW, RetryPolicy(intervals, jitter=0.0, retry_after_cap_s=3600))
        assert verdict.due == NOW + timedelta(seconds=NOT_STARTED_MIN_DELAY_S)
