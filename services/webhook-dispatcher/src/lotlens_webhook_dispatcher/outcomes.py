"""What an attempt's outcome means: the events to publish and the delivery's next state. Pure."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from lotlens_common.events import Event, WebhookAttempted, WebhookDelivered, WebhookFailed
from lotlens_webhook_dispatcher.delivery import AttemptOutcome
from lotlens_webhook_dispatcher.dispatch_queue import Delivery
from lotlens_webhook_dispatcher.schedule import next_attempt_at, next_delay_s

INTERRUPTED = "interrupted: the dispatcher stopped before the outcome was recorded"
# An attempt that broke before its POST is due again after the first retry interval, never sooner
# than this: a table that stays broken must not turn the dispatcher into a busy loop.
NOT_STARTED_MIN_DELAY_S = 1.0


@dataclass(frozen=True)
class RetryPolicy:
    """The retry schedule's knobs."""

    intervals_s: Sequence[float]
    jitter: float
    retry_after_cap_s: float


@dataclass(frozen=True)
class Verdict:
    """The delivery's next state and the events that say so.

    `pending` (retry at `due`), `delivered`, `failed`; `sending` only for an interrupted attempt's
    record, published on its own while the next attempt is under way.
    """

    status: str
    events: list[Event]
    due: datetime | None = None
    # False for an attempt that broke before its POST: the claim gives its attempt number back.
    spent: bool = True
    # An interruption counted with it (a hand-back whose failed attempt could not be marked).
    interrupted: bool = False
    # A hand-back of an attempt that cannot start yet: the wait for it is measured from the first.
    unready: bool = False
    # The interrupted attempts its events record: once published, the row forgets them.
    interruptions_recorded: tuple[int, ...] = ()

    @property
    def record_only(self) -> bool:
        """Events to publish and nothing more: the delivery's row is the next attempt's to store."""
        return self.status == "sending"


def judge(delivery: Delivery, outcome: AttemptOutcome, started: datetime, now: datetime,
          policy: RetryPolicy, rng: random.Random | None = None) -> Verdict:
    """Delivered on success; failed when final (410) or after the last attempt; else retried later."""
    if outcome.succeeded:
        return Verdict("delivered", [
            attempted(delivery, delivery.attempt, started, outcome, None),
            WebhookDelivered(job_id=delivery.job_id, delivery_id=delivery.delivery_id,
                             webhook_url=delivery.webhook_url, attempts=delivery.attempt, delivered_at=now)])
    delay = None if outcome.final else next_delay_s(
        delivery.sent_attempt, policy.intervals_s, policy.jitter, outcome.retry_after_s,
        policy.retry_after_cap_s, rng)
    if delay is None:
        return Verdict("failed", [attempted(delivery, delivery.attempt, started, outcome, None),
                                  failed(delivery, outcome.error or "failed", now)])
    due = next_attempt_at(now, delay)
    return Verdict("pending", [attempted(delivery, delivery.attempt, started, outcome, due)], due)


def interrupted(delivery: Delivery, now: datetime) -> Verdict | None:
    """The records of the attempts dead instances left unfinished (the one this claim found, and
    earlier ones whose records may not be out); final once interrupted too often."""
    found = delivery.interrupted_attempts
    if not found:
        return None
    lost: list[Event] = [attempted(delivery, attempt, at, AttemptOutcome(False, 0.0, error=INTERRUPTED), None)
                         for attempt, at in found]
    recorded = tuple(attempt for attempt, _ in found)
    if delivery.exhausted:
        return Verdict("failed", [*lost, failed(delivery, INTERRUPTED, now)], interruptions_recorded=recorded)
    return Verdict("sending", lost, interruptions_recorded=recorded)


def not_started(now: datetime, policy: RetryPolicy, rng: random.Random | None = None) -> Verdict:
    """An attempt that broke before its POST: `pending` again after the first retry interval
    (jittered), the attempt not spent, nothing recorded: it is neither an attempt nor an
    interruption."""
    delay = next_delay_s(1, policy.intervals_s, policy.jitter, rng=rng) or 0.0
    return Verdict("pending", [], next_attempt_at(now, max(delay, NOT_STARTED_MIN_DELAY_S)), spent=False)


def unready_given_up(delivery: Delivery, why: str, now: datetime) -> Verdict:
    """A delivery that could not start for too long (or whose failures could not be recorded), given
    up; the claim's attempt not spent, as nothing was sent."""
    event = failed(delivery, why, now).model_copy(update={"attempts": delivery.attempt - 1})
    return Verdict("failed", [event], spent=False)


def attempted(delivery: Delivery, attempt: int, at: datetime, outcome: AttemptOutcome,
              due: datetime | None) -> WebhookAttempted:
    """The event recording one attempt."""
    return WebhookAttempted(
        job_id=delivery.job_id, delivery_id=delivery.delivery_id, webhook_url=delivery.webhook_url,
        attempt=attempt, attempted_at=at, succeeded=outcome.succeeded, status_code=outcome.status_code,
        latency_ms=round(outcome.latency_ms, 1), error=outcome.error, response_body=outcome.response_body,
        next_attempt_at=due)


def failed(delivery: Delivery, error: str, now: datetime) -> WebhookFailed:
    """The event giving a delivery up."""
    return WebhookFailed(job_id=delivery.job_id, delivery_id=delivery.delivery_id,
                         webhook_url=delivery.webhook_url, attempts=delivery.attempt, failed_at=now,
                         error=error)
