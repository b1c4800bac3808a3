"""Attempts that broke before their POST: nothing was sent, so they are neither attempts nor
interruptions.

Before its POST an attempt looks up its client's shared key, reads the job from the read models
and builds the body, reads the client's secrets to sign it and may renew its lease. PostgreSQL
can refuse any of that (an outage, a broken table) and a defect can raise while building the
body. Left to its lease, such an attempt was taken up again as interrupted ("the dispatcher
stopped…", though none had and nothing was sent), and a PostgreSQL outage of about five leases,
or a broken secrets table, gave healthy deliveries up as failed without a single POST. The claim
is handed back instead: the delivery is `pending` again soon (`outcomes.not_started`), its
attempt and interruption counts as before. So is the claim of an attempt that cannot start yet
(`Unready`): a job the read models do not have yet (the projector lags) or a client with no
shared key configured (the operator's omission, put right by configuring it). As failed
attempts, both used up the five attempts within minutes and gave the delivery up, never sent;
handed back without end, a client removed from LOTLENS_CLIENTS or a job whose projection was
dead-lettered kept its deliveries open for good. They are given up `webhook_unready_give_up_h`
after their attempts first could not start (`unready_since`; WebhookFailed, saying why).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from lotlens_webhook_dispatcher import metrics
from lotlens_webhook_dispatcher.delivery import AttemptOutcome
from lotlens_webhook_dispatcher.dispatch_queue import INTERRUPTIONS_ALLOWED, Delivery
from lotlens_webhook_dispatcher.outcomes import RetryPolicy, Verdict, not_started, unready_given_up

log = logging.getLogger(__name__)


class Unready(LookupError):
    """What an attempt needs is not there yet; `reason` is one of `metrics.NOT_STARTED_REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotStarted(Exception):
    """An attempt broke at `step`, before its POST: nothing was sent.

    `reason` is `database` when PostgreSQL refused or could not be reached, the `Unready` reason
    when something the attempt needs is not there yet (all of these pass: the claim is handed
    back), `error` otherwise (a defect: a failed attempt, its traceback logged). `marked`: it broke
    after its POST's mark (`post_marks`), so it is stored as a spent attempt, never handed back.
    """

    def __init__(self, step: str, cause: Exception, marked: bool = False) -> None:
        first_line = (str(cause).splitlines() or [""])[0]  # a statement's error goes on with its SQL
        super().__init__(f"{step}: {type(cause).__name__}: {first_line}")
        self.step = step
        self.marked = marked
        self.unready = isinstance(cause, Unready)
        if isinstance(cause, Unready):
            self.reason = cause.reason
        else:
            self.reason = "database" if isinstance(cause, SQLAlchemyError) else "error"

    @property
    def passes(self) -> bool:
        """Whether trying again later can succeed (the claim is handed back, not spent)."""
        return self.reason != "error" and not self.marked


@contextmanager
def before_post(step: str, marked: bool = False) -> Iterator[None]:
    """Whatever `step` raises becomes `NotStarted`: it runs before the POST, so nothing was sent;
    `marked`: it runs after the POST's mark."""
    try:
        yield
    except Exception as exc:
        raise NotStarted(step, exc, marked) from exc


def hand_back(delivery: Delivery, broke: NotStarted, now: datetime, policy: RetryPolicy,
              give_up_after: timedelta, rng: random.Random | None = None) -> Verdict:
    """The verdict undoing the claim of an attempt stopped before its POST by something that
    passes (the delivery is neither attempted nor given up); counted and logged once.

    A missing key is logged as an error: it passes only once an operator configures the key. A
    delivery that cannot start yet (`Unready`) `give_up_after` after its attempts first could not
    (`unready_since`) is given up instead: a key never configured, or a job its projection never
    reached, is no longer coming. Measured from when it was scheduled, a delivery that had waited
    that long for other reasons (the dispatcher down, a Retry-After) was given up at its first
    passing unready.
    """
    metrics.ATTEMPTS_NOT_STARTED.labels(reason=broke.reason).inc()
    waited = now - (delivery.unready_since or now)
    if broke.unready and waited >= give_up_after:
        hours = waited.total_seconds() / 3600
        log.error("delivery %s given up: could not start for %.1f h: %s",
                  delivery.delivery_id, hours, broke,
                  extra={"job_id": delivery.job_id, "delivery_id": delivery.delivery_id})
        return unready_given_up(
            delivery, f"given up: not sent, could not start for {hours:.1f} h: {broke}", now)
    verdict = dataclasses.replace(not_started(now, policy, rng), unready=broke.unready)
    log.log(logging.ERROR if broke.reason == "no_key" else logging.WARNING,
            "attempt %d of delivery %s not started, nothing sent; due again in %.1f s: %s",
            delivery.attempt, delivery.delivery_id, ((verdict.due or now) - now).total_seconds(), broke,
            extra={"job_id": delivery.job_id, "delivery_id": delivery.delivery_id})
    return verdict


def failed_attempt(delivery: Delivery, broke: NotStarted) -> AttemptOutcome:
    """An attempt a defect stopped before its POST, as a failed attempt on the schedule.

    It fails the same way at each try: handed back like PostgreSQL's refusals, the delivery never
    ended and kept no history. As a failed attempt it is recorded, retried and in the end `failed`;
    the caller marks it first, as any spent attempt (`dispatch_queue.record_many`).
    """
    metrics.ATTEMPTS_NOT_STARTED.labels(reason=broke.reason).inc()
    log.error("attempt %d of delivery %s not sent: %s", delivery.attempt, delivery.delivery_id, broke,
              exc_info=broke, extra={"job_id": delivery.job_id, "delivery_id": delivery.delivery_id})
    return AttemptOutcome(False, 0.0, error=f"not sent: {broke}")


def unmarked(delivery: Delivery, broke: NotStarted, mark_error: Exception, now: datetime,
             policy: RetryPolicy, rng: random.Random | None = None) -> Verdict:
    """The verdict on a defect's failed attempt that could not be marked (so not stored as spent):
    handed back, counted as an interruption, and given up once interrupted too often. Its attempt
    number is given back, so the schedule does not subtract it (`Delivery.sent_attempt`).

    Raised on, the claim was left to its lease unmarked: taken up again as the same attempt, no
    interruption counted, and a mark that fails each time (a defect) tried it every lease for good.
    """
    metrics.ATTEMPTS_NOT_STARTED.labels(reason=broke.reason).inc()
    log.error("attempt %d of delivery %s not sent, and its failure could not be recorded: %s",
              delivery.attempt, delivery.delivery_id, mark_error, exc_info=mark_error,
              extra={"job_id": delivery.job_id, "delivery_id": delivery.delivery_id})
    if delivery.interruptions >= INTERRUPTIONS_ALLOWED:
        why = f"given up: not sent, and the failure could not be recorded: {broke}: {mark_error}"
        return dataclasses.replace(unready_given_up(delivery, why, now), interrupted=True)
    return dataclasses.replace(not_started(now, policy, rng), interrupted=True)
