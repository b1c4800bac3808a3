"""The recorder: stores finished attempts' outcomes in groups, on one thread.

One Kafka flush and one transaction for all the attempts that finished meanwhile, instead of one
each: a flush waits for the broker's acks, and one at a time they capped the dispatcher near 100
attempts a second. A spent attempt's events are published to Kafka first and its row written
second: a crash in between repeats an event (the projection is keyed by delivery and attempt)
but never loses one. An attempt handed back unsent (`not_started`) has no event: PostgreSQL alone
stores it, first and on its own, so a Kafka outage never holds it (held with the sent attempts'
outcomes, it stayed `sending` for the whole outage, and an instance that died meanwhile left it
to be recorded as interrupted though nothing was sent). Outcomes that cannot be stored are kept,
their leases renewed, and tried again.

While an outcome waits, its lease is kept (`keep_leases`, from the claim loop): the recorder's own
thread may be inside a flush (30 s, then a ping of 2 s) and the next one, longer than the lease.

An interrupted attempt's record has an event id derived from the delivery and the attempt, and is
queued once while it waits: its delivery's row lists it until it is published, so during a Kafka
outage every claim of the delivery (handed back each time, stored at once) recorded it again, and
with fresh ids each copy counted as another interruption for subscribers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from lotlens_common.envelope import Envelope, caused
from lotlens_common.events import Event, WebhookAttempted
from lotlens_common.producer import EventProducer
from lotlens_webhook_dispatcher import dispatch_queue, metrics
from lotlens_webhook_dispatcher.dispatch_queue import Delivery, Record
from lotlens_webhook_dispatcher.outcomes import Verdict

log = logging.getLogger(__name__)

# Waits between tries to store outcomes while Kafka or PostgreSQL is down: doubling, capped.
_RETRY_S = 0.5
_RETRY_MAX_S = 5.0


@dataclass(frozen=True, eq=False)
class Outcome:
    """A finished attempt waiting to be stored, with its events' envelopes (their ids fixed)."""

    delivery: Delivery
    verdict: Verdict
    envelopes: list[Envelope]


class Recorder:
    """Stores the outcomes `finish` is given; `forget` is told which claims are done with."""

    def __init__(self, engine: Engine, producer: EventProducer, topic: str, lease_s: float,
                 clock: Callable[[], datetime], forget: Callable[[Sequence[Delivery]], None]) -> None:
        self._engine = engine
        self._producer = producer
        self._topic = topic
        self._lease_s = lease_s
        self._clock = clock
        self._forget = forget
        self._finished: queue.Queue[Outcome] = queue.Queue()
        # Interrupted attempts (delivery id, attempt) whose record-only outcome is queued or unstored.
        self._interruptions: set[tuple[str, int]] = set()
        # Outcomes of the delivery's row's own attempt waiting to be stored, and when their lease
        # was last extended (`time.monotonic`).
        self._waiting: dict[Outcome, float] = {}
        self._lock = threading.Lock()

    def finish(self, delivery: Delivery, verdict: Verdict) -> None:
        """Queue an attempt's verdict to be stored (an interruption record already waiting, not again)."""
        if verdict.record_only:
            records = {(delivery.delivery_id, attempt) for attempt in verdict.interruptions_recorded}
            with self._lock:
                if records <= self._interruptions:
                    return
                self._interruptions |= records
        # The envelopes are made once: tried again, an outcome's events keep their ids.
        envelopes = [_envelope(delivery, verdict, event) for event in verdict.events]
        outcome = Outcome(delivery, verdict, envelopes)
        if not verdict.record_only:  # an interruption's record: the row is the next attempt's
            with self._lock:
                self._waiting[outcome] = time.monotonic()
        self._finished.put(outcome)

    def interruptions_waiting(self) -> int:
        """Interruption records queued or waiting to be published: outcomes not yet recorded too."""
        with self._lock:
            return len(self._interruptions)

    def keep_leases(self) -> None:
        """Renew the leases of the outcomes that have waited a third of a lease to be stored.

        Called from the claim loop: the recorder's own thread may be waiting on Kafka, for the
        flush under way as an outcome came and then for its own (30 s and a 2-s ping each), past
        the lease of a webhook timeout under about 20 s; another instance then took the attempt up
        as interrupted and POSTed it again while this one still recorded it. An outcome comes with
        two thirds of its lease left at least (its POST takes one of the three timeouts), so it
        still has a third when it is renewed. One taken over anyway (PostgreSQL was down) is
        dropped by `_still_held` or refused by `record_many`.
        """
        now = time.monotonic()
        with self._lock:
            due = [outcome for outcome, at in self._waiting.items() if now - at >= self._lease_s / 3]
        if not due:
            return
        try:
            with self._engine.begin() as conn:
                for outcome in due:  # fenced: one stored or taken over meanwhile is left as it is
                    dispatch_queue.renew(conn, outcome.delivery, self._clock(), self._lease_s)
        except Exception as exc:  # PostgreSQL down or its pool busy: the claims go on regardless
            log.warning("renewing the leases of %d attempts waiting to be recorded failed: %s", len(due), exc)
            return
        with self._lock:
            for outcome in due:
                if outcome in self._waiting:  # not stored meanwhile
                    self._waiting[outcome] = now

    def run(self, attempts_done: threading.Event) -> None:
        """Store finished attempts in groups until every attempt is done and stored.

        A group that cannot be stored (Kafka or PostgreSQL down) is kept and tried again with the
        attempts finished meanwhile: its outcomes are known. Left to their leases, they were taken
        up again as interrupted and sent again, and a long outage gave delivered webhooks up as
        failed. At shutdown what is still unstored is left to its leases.
        """
        unstored: list[Outcome] = []
        delay = _RETRY_S
        while True:
            try:
                unstored.append(self._finished.get(timeout=0.05))
            except queue.Empty:
                if not unstored and attempts_done.is_set():
                    return
            while True:
                try:
                    unstored.append(self._finished.get_nowait())
                except queue.Empty:
                    break
            unstored = self._store(unstored)
            if not unstored:
                delay = _RETRY_S
            elif attempts_done.is_set():
                self._let_go(unstored)
                return
            else:
                unstored = self._still_held(unstored)
                unstored = self._wait_storing_hand_backs(unstored, delay, attempts_done)
                delay = min(2 * delay, _RETRY_MAX_S)

    def _wait_storing_hand_backs(self, unstored: list[Outcome], delay: float,
                                 attempts_done: threading.Event) -> list[Outcome]:
        """Wait `delay` before the next try, storing the hand-backs that arrive meanwhile at once.

        They need PostgreSQL alone: held for the whole wait (up to 5 s at a time, while Kafka is
        down), a hand-back stayed `sending` past its lease and was taken for an interruption.
        """
        until = time.monotonic() + delay
        while not attempts_done.is_set() and (left := until - time.monotonic()) > 0:
            try:
                arrived = self._finished.get(timeout=min(left, 0.05))
            except queue.Empty:
                continue
            if arrived.verdict.events or not self._record([arrived]):
                unstored.append(arrived)
        return unstored

    def _store(self, group: list[Outcome]) -> list[Outcome]:
        """Store the group's hand-backs, then the rest; the outcomes left unstored."""
        # By events, not by `spent`: a delivery given up unsent (`unready_given_up`) is unspent but
        # has its WebhookFailed to publish, and grouped with the hand-backs it held them on Kafka.
        handed_back = [outcome for outcome in group if not outcome.verdict.events]
        rest = [outcome for outcome in group if outcome.verdict.events]
        left = [] if not handed_back or self._record(handed_back) else handed_back
        return left + (rest if rest and not self._record(rest) else [])

    def _still_held(self, unstored: list[Outcome]) -> list[Outcome]:
        """Renew the leases of outcomes waiting to be stored (while PostgreSQL answers), so no other
        instance takes their attempts up again and sends them meanwhile; those another instance
        took already are dropped, their events unpublished."""
        try:
            with self._engine.begin() as conn:
                # An interrupted attempt's record is kept whoever holds the delivery now: that
                # attempt is over, and its record is due however the delivery goes on.
                held = [outcome for outcome in unstored if outcome.verdict.record_only
                        or dispatch_queue.renew(conn, outcome.delivery, self._clock(), self._lease_s)]
        except Exception as exc:  # PostgreSQL down or its pool busy: the recorder must outlive it
            log.warning("renewing the leases of %d unstored attempts failed: %s", len(unstored), exc)
            return unstored  # the fence refuses their records if taken over meanwhile
        self._let_go([outcome for outcome in unstored if outcome not in held])
        return held

    def _record(self, group: list[Outcome]) -> bool:
        """Publish the group's events and store its outcomes; False when that failed (nothing stored).

        An interrupted attempt's record is only published (and struck from the row's unpublished
        ones): the delivery's row belongs to the attempt under way, which stores its own outcome
        (and is forgotten with it).
        """
        settled = [outcome for outcome in group if not outcome.verdict.record_only]
        envelopes = [envelope for outcome in group for envelope in outcome.envelopes]
        recorded = [(o.delivery.delivery_id, o.verdict.interruptions_recorded)
                    for o in group if o.verdict.interruptions_recorded]
        kept: set[str] = set()
        try:
            if envelopes:  # attempts handed back unsent have none: PostgreSQL alone stores them
                # Only the recorder thread publishes: EventProducer reports failures to whoever flushes.
                self._producer.publish_many(self._topic, envelopes)
                self._producer.flush()
            if settled or recorded:
                with self._engine.begin() as conn:
                    # Published: the rows stop keeping them for the next claim to publish.
                    dispatch_queue.interruptions_published(conn, recorded)
                    kept = dispatch_queue.record_many(conn, [
                        Record(o.delivery, o.verdict.status, o.verdict.due, o.verdict.spent,
                               o.verdict.interrupted, o.verdict.unready) for o in settled], self._clock())
        except Exception:
            # Nothing of the group is stored (its events, if published, are repeated; never lost).
            log.exception("recording %d attempts failed; trying again", len(group))
            return False
        if len(kept) < len(settled):
            log.warning("%d of %d deliveries were taken over before their attempt was recorded",
                        len(settled) - len(kept), len(settled))
        # Hand-backs have no events (`hand_back` counts and logs them); an unready delivery given up
        # has. Only the stored are counted: a refused one belongs to the instance that took it over,
        # which counts its own (counted here too, a stall's `failed` inflated the failure rate).
        for outcome in (o for o in settled if o.verdict.events and o.delivery.delivery_id in kept):
            delivery, status = outcome.delivery, outcome.verdict.status
            metrics.count_verdict(status)
            log.info("delivery %s attempt %d: %s", delivery.delivery_id, delivery.attempt, status,
                     extra={"job_id": delivery.job_id, "delivery_id": delivery.delivery_id})
        self._let_go(settled)
        with self._lock:
            self._interruptions.difference_update(
                (o.delivery.delivery_id, attempt) for o in group if o.verdict.record_only
                for attempt in o.verdict.interruptions_recorded)
        return True

    def _let_go(self, outcomes: Sequence[Outcome]) -> None:
        """These outcomes are stored, or left to their leases: no longer kept, no longer in flight."""
        with self._lock:
            for outcome in outcomes:
                self._waiting.pop(outcome, None)
        self._forget([outcome.delivery for outcome in outcomes])


def _envelope(delivery: Delivery, verdict: Verdict, event: Event) -> Envelope:
    """The event's envelope; an interrupted attempt's record has the same id whoever records it."""
    if isinstance(event, WebhookAttempted) and event.attempt in verdict.interruptions_recorded:
        # Any instance's claim of the delivery may record it until one has published it.
        return caused(event, delivery.client_id, f"{delivery.delivery_id}\n{event.attempt}\ninterrupted")
    return Envelope(event=event, client_id=delivery.client_id)
