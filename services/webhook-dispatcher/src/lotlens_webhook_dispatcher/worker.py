"""The due-queue loop: claim due deliveries, make each attempt, record its outcome.

One thread claims; a pool of `webhook_concurrency` threads makes the attempts; one recorder
thread stores their outcomes in groups (one Kafka flush and one transaction for all the attempts
that finished meanwhile, instead of one each: a flush waits for the broker's acks, and one at a
time they capped the dispatcher near 100 attempts a second). An attempt's slot is free again as
soon as its HTTP call ends, while its outcome waits for the recorder: holding the slot until the
outcome was stored left the pool idle for every flush and commit (a 2,000-URL job went out at
under 600 a second). At most `UNRECORDED_PER_SLOT` outcomes per slot may wait, so a recorder that
cannot reach Kafka or PostgreSQL soon stops the claims instead of piling up attempts whose leases
would run out unrecorded. A host never has more than
`webhook_per_host_concurrency` attempts in flight from this instance, and rows of a saturated
host are not even claimed, so a slow endpoint only ever holds its own slots. Outcomes are
published to Kafka first and written to the queue second: a crash in between repeats an event
(the projection is keyed by delivery and attempt) but never loses one. Outcomes that cannot be
stored are kept and tried again; an attempt whose outcome was never written (its instance died)
is taken up again as interrupted once its lease runs out, and sent again; the interrupted
attempt's record goes to the recorder at once, on its own, so it is published whatever becomes
of the attempt that follows. An attempt that broke before its POST sent nothing: the recorder
hands its claim back (`not_started`), neither an attempt nor an interruption.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx2
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from lotlens_common import tracing
from lotlens_common.clock import utc_now
from lotlens_common.envelope import Envelope
from lotlens_common.logs import log_context
from lotlens_common.ops import heartbeat
from lotlens_common.producer import EventProducer
from lotlens_common.signing import webhook_headers
from lotlens_webhook_dispatcher import dispatch_queue, metrics, payloads
from lotlens_webhook_dispatcher.config import DispatcherSettings
from lotlens_webhook_dispatcher.delivery import AttemptOutcome, post_webhook
from lotlens_webhook_dispatcher.dispatch_queue import Delivery
from lotlens_webhook_dispatcher.finished_jobs import FinishedJobs
from lotlens_webhook_dispatcher.not_started import NotStarted, before_post, failed_attempt, hand_back
from lotlens_webhook_dispatcher.outcomes import RetryPolicy, Verdict, interrupted, judge
from lotlens_webhook_dispatcher.secrets_cache import SecretsCache

log = logging.getLogger(__name__)

USER_AGENT = "Generation-Service/2.0"
UNRECORDED_PER_SLOT = 4
_GAUGE_PERIOD_S = 5.0
# Waits between tries to store outcomes while Kafka or PostgreSQL is down: doubling, capped.
_RECORD_RETRY_S = 0.5
_RECORD_RETRY_MAX_S = 5.0
_PRUNE_PERIOD_S = 60.0
_PRUNE_ROWS = 5000


@dataclass(frozen=True, eq=False)
class _Outcome:
    """A finished attempt waiting to be stored, with its events' envelopes (their ids fixed)."""

    delivery: Delivery
    verdict: Verdict
    envelopes: list[Envelope]


class LeaseLost(RuntimeError):
    """Another instance took the attempt over while this one stalled; it must not send."""


class Dispatcher:
    """Delivers due webhooks until stopped."""

    def __init__(self, engine: Engine, producer: EventProducer,
                 new_transport: Callable[[], httpx2.BaseTransport], settings: DispatcherSettings,
                 clock: Callable[[], datetime] = utc_now, rng: random.Random | None = None) -> None:
        self._engine = engine
        self._producer = producer
        # One HTTP transport per attempt thread: threads sharing one pool queue on its lock.
        self._new_transport = new_transport
        self._local = threading.local()
        self._transports: list[httpx2.BaseTransport] = []
        self._settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._policy = RetryPolicy(settings.webhook_retry_intervals_s, settings.webhook_jitter,
                                   settings.webhook_retry_after_cap_s)
        # Attempts under way, per host (only hosts with some); and every claimed delivery not yet
        # recorded.
        self._hosts: Counter[str] = Counter()
        self._sending = 0
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._gauges_at = 0.0
        self._pruned_at = -_PRUNE_PERIOD_S
        self._finished: queue.Queue[_Outcome] = queue.Queue()
        self._finished_jobs = FinishedJobs(engine)
        self._secrets = SecretsCache(engine, settings.webhook_secrets_cache_s, clock)

    def hosts_in_flight(self) -> dict[str, int]:
        """Attempts under way per host (the per-host limit's bookkeeping)."""
        with self._lock:
            return dict(self._hosts)

    def wake(self) -> None:
        """Claim at once (deliveries were just scheduled) instead of at the next poll."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Claim and deliver until `stop` is set; attempts under way are finished and recorded first."""
        s = self._settings
        attempts_done = threading.Event()
        recorder = threading.Thread(target=self._record_finished, args=(attempts_done,),
                                    name="webhook-recorder", daemon=True)
        recorder.start()
        try:
            with ThreadPoolExecutor(max_workers=s.webhook_concurrency, thread_name_prefix="webhook") as pool:
                while not stop.is_set():
                    heartbeat("deliveries")
                    self._wake.clear()
                    try:
                        claimed = self._claim()
                    except DBAPIError as exc:
                        log.warning("cannot reach the database, retrying: %s", exc)
                        stop.wait(max(s.webhook_poll_interval_s, 2.0))
                        continue
                    for delivery in claimed:
                        pool.submit(self._attempt_then_free_slot, delivery)
                    self._update_gauges()
                    self._prune_if_due()
                    if not claimed:
                        self._wake.wait(s.webhook_poll_interval_s)
        finally:
            attempts_done.set()
            recorder.join()
            for transport in self._transports:
                transport.close()

    def _transport(self) -> httpx2.BaseTransport:
        transport: httpx2.BaseTransport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = self._local.transport = self._new_transport()
            with self._lock:
                self._transports.append(transport)
        return transport

    def _claim(self) -> list[Delivery]:
        s = self._settings
        with self._lock:
            capacity = min(s.webhook_concurrency - self._sending,
                           UNRECORDED_PER_SLOT * s.webhook_concurrency - len(self._in_flight))
            room = {host: s.webhook_per_host_concurrency - n for host, n in self._hosts.items()}
            mine = list(self._in_flight)
        if capacity <= 0:
            return []
        with self._engine.begin() as conn:
            claimed = dispatch_queue.claim(conn, self._clock(), capacity, room,
                                           s.webhook_per_host_concurrency, s.lease_s, mine)
        with self._lock:
            self._hosts.update(d.host for d in claimed)
            self._sending += len(claimed)
            self._in_flight.update(d.delivery_id for d in claimed)
            metrics.IN_FLIGHT.set(self._sending)
        return claimed

    def _attempt_then_free_slot(self, delivery: Delivery) -> None:
        try:
            self.attempt(delivery)
            return  # the recorder forgets it once its outcome is stored
        except LeaseLost:
            log.warning("attempt %d of delivery %s stalled past its lease; left to the instance that took it",
                        delivery.attempt, delivery.delivery_id, extra={"delivery_id": delivery.delivery_id})
        except Exception:
            # Broke in or after its POST (it may have been sent): the lease runs out, it is interrupted.
            log.exception("attempt %d of delivery %s broke", delivery.attempt, delivery.delivery_id,
                          extra={"job_id": delivery.job_id, "delivery_id": delivery.delivery_id})
        finally:
            self._free_slot(delivery)
        self._forget([delivery])

    def _free_slot(self, delivery: Delivery) -> None:
        """The attempt's HTTP call is over: its slot (and its host's) can take another claim."""
        with self._lock:
            self._hosts[delivery.host] -= 1
            if self._hosts[delivery.host] <= 0:
                # Kept at zero, every host ever sent to stayed: per-lot webhooks to many hosts
                # grew the counts without bound.
                del self._hosts[delivery.host]
            self._sending -= 1
            metrics.IN_FLIGHT.set(self._sending)
        self._wake.set()

    def _forget(self, deliveries: Sequence[Delivery]) -> None:
        """Nothing more of these claims is under way or waiting to be recorded."""
        with self._lock:
            self._in_flight.difference_update(d.delivery_id for d in deliveries)
        self._wake.set()

    def attempt(self, delivery: Delivery) -> None:
        """Make one claimed attempt (or close an exhausted delivery) and record the outcome."""
        with log_context(job_id=delivery.job_id, delivery_id=delivery.delivery_id):
            self._attempt(delivery)

    def _attempt(self, delivery: Delivery) -> None:
        lost = interrupted(delivery, self._clock())
        if lost is not None:
            # Handed to the recorder now, not with this attempt's outcome: an attempt that broke
            # before its POST took the record with it. Published while the POST goes on, a Kafka
            # outage holds the record back, never the attempt.
            self._finish(delivery, lost)
            if not lost.record_only:
                return  # interrupted too often: given up
        started = self._clock()
        try:
            outcome = self._send(delivery)
        except NotStarted as broke:  # nothing sent: not left to the lease, never an interruption
            if broke.reason == "database":  # passing: the recorder undoes the claim
                self._finish(delivery, hand_back(delivery, broke, self._clock(), self._policy, self._rng))
                return
            outcome = failed_attempt(delivery, broke)
        metrics.ATTEMPT_SECONDS.labels("success" if outcome.succeeded else "failure").observe(
            outcome.latency_ms / 1000)
        self._finish(delivery, judge(delivery, outcome, started, self._clock(), self._policy, self._rng))

    def _send(self, delivery: Delivery) -> AttemptOutcome:
        s = self._settings
        key = s.shared_key(delivery.client_id)
        if key is None:
            return AttemptOutcome(False, 0.0, error=f"not sent: no key for client {delivery.client_id!r}")
        with before_post("payload"):
            job = self._finished_jobs.job(delivery.job_id)
            if job is None:
                return AttemptOutcome(False, 0.0, error="not sent: the job is not in the read models")
            body = payloads.part_body(payloads.head(job),
                                      self._finished_jobs.lots_of(delivery.job_id, delivery.webhook_url),
                                      delivery.part, delivery.total_parts, s.webhook_max_payload_bytes)
        with before_post("signing"):
            headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                       "X-Delivery-Attempt": str(delivery.attempt), "X-Job-ID": delivery.job_id,
                       **webhook_headers(key, self._secrets.secrets(delivery.client_id), delivery.delivery_id,
                                         int(self._clock().timestamp()), body)}
            transport = self._transport()
            parent = tracing.extract({"traceparent": delivery.traceparent} if delivery.traceparent else None)
        if not self._lease_fresh(delivery):
            # Send only if the lease still holds; checked after the last read (the secrets'):
            # one stalled past the lease POSTed an attempt another instance may have taken.
            with before_post("lease"), self._engine.begin() as conn:
                held = dispatch_queue.renew(conn, delivery, self._clock(), s.lease_s)
            if not held:
                raise LeaseLost(delivery.delivery_id)
        with tracing.span("webhook POST", SpanKind.CLIENT, parent, attributes={
                "http.request.method": "POST", "lotlens.job_id": delivery.job_id,
                "lotlens.delivery_attempt": delivery.attempt}) as span:
            outcome = post_webhook(transport, delivery.webhook_url, body, headers,
                                   s.webhook_timeout_s, s.webhook_response_body_chars)
            if span is not None:
                span.set_attribute("http.response.status_code", outcome.status_code or 0)
                if not outcome.succeeded:
                    span.set_status(StatusCode.ERROR, outcome.error or "not delivered")
            return outcome

    def _lease_fresh(self, delivery: Delivery) -> bool:
        """Whether the claim's lease still covers a whole attempt with half the margin to spare.

        Then no other instance can have taken the attempt over, and renewing it (a transaction per
        attempt) can be skipped.
        """
        s = self._settings
        if delivery.leased_until is None:
            return False
        left = delivery.leased_until - self._clock()
        return left > timedelta(seconds=s.lease_s - s.webhook_lease_margin_s / 2)

    def _finish(self, delivery: Delivery, verdict: Verdict) -> None:
        # The envelopes are made once: tried again, an outcome's events keep their ids.
        envelopes = [Envelope(event=event, client_id=delivery.client_id) for event in verdict.events]
        self._finished.put(_Outcome(delivery, verdict, envelopes))

    def _record_finished(self, attempts_done: threading.Event) -> None:
        """Store finished attempts in groups until every attempt is done and stored.

        A group that cannot be stored (Kafka or PostgreSQL down) is kept and tried again with the
        attempts finished meanwhile: its outcomes are known. Left to their leases, they were taken
        up again as interrupted and sent again, and a long outage gave delivered webhooks up as
        failed. At shutdown what is still unstored is left to its leases.
        """
        unstored: list[_Outcome] = []
        delay = _RECORD_RETRY_S
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
            if not unstored or self._record(unstored):
                unstored, delay = [], _RECORD_RETRY_S
            elif attempts_done.is_set():
                self._forget([outcome.delivery for outcome in unstored])
                return
            else:
                unstored = self._still_held(unstored)
                attempts_done.wait(delay)
                delay = min(2 * delay, _RECORD_RETRY_MAX_S)

    def _still_held(self, unstored: list[_Outcome]) -> list[_Outcome]:
        """Renew the leases of outcomes waiting to be stored (while PostgreSQL answers), so no other
        instance takes their attempts up again and sends them meanwhile; those another instance
        took already are dropped, their events unpublished."""
        lease_s = self._settings.lease_s
        try:
            with self._engine.begin() as conn:
                # An interrupted attempt's record is kept whoever holds the delivery now: that
                # attempt is over, and its record is due however the delivery goes on.
                held = [outcome for outcome in unstored if outcome.verdict.record_only
                        or dispatch_queue.renew(conn, outcome.delivery, self._clock(), lease_s)]
        except DBAPIError:
            return unstored  # PostgreSQL down too: the fence refuses their records if taken over
        self._forget([outcome.delivery for outcome in unstored if outcome not in held])
        return held

    def _record(self, group: list[_Outcome]) -> bool:
        """Publish the group's events and store its outcomes; False when that failed (nothing stored).

        An interrupted attempt's record is only published: the delivery's row belongs to the
        attempt under way, which stores its own outcome (and is forgotten with it).
        """
        settled = [outcome for outcome in group if not outcome.verdict.record_only]
        envelopes = [envelope for outcome in group for envelope in outcome.envelopes]
        kept = 0
        try:
            if envelopes:  # attempts handed back unsent have none: PostgreSQL alone stores them
                # Only the recorder thread publishes: EventProducer reports failures to whoever flushes.
                self._producer.publish_many(self._settings.topics.webhooks, envelopes)
                self._producer.flush()
            if settled:
                with self._engine.begin() as conn:
                    kept = dispatch_queue.record_many(conn, [
                        (o.delivery, o.verdict.status, o.verdict.due, o.verdict.spent) for o in settled],
                        self._clock())
        except Exception:
            # Nothing of the group is stored (its events, if published, are repeated; never lost).
            log.exception("recording %d attempts failed; trying again", len(group))
            return False
        if kept < len(settled):
            log.warning("%d of %d deliveries were taken over before their attempt was recorded",
                        len(settled) - kept, len(settled))
        for outcome in (outcome for outcome in settled if outcome.verdict.spent):  # the rest: `hand_back`
            delivery, status = outcome.delivery, outcome.verdict.status
            metrics.count_verdict(status)
            log.info("delivery %s attempt %d: %s", delivery.delivery_id, delivery.attempt, status,
                     extra={"job_id": delivery.job_id, "delivery_id": delivery.delivery_id})
        self._forget([outcome.delivery for outcome in settled])
        return True

    def _prune_if_due(self) -> None:
        """Forget finished deliveries past the retention, at most `_PRUNE_ROWS` a `_PRUNE_PERIOD_S`
        (a day of per-lot webhooks at a million lots is about 700 rows a minute)."""
        if time.monotonic() - self._pruned_at < _PRUNE_PERIOD_S:
            return
        self._pruned_at = time.monotonic()
        cutoff = self._clock() - timedelta(hours=self._settings.webhook_queue_retention_h)
        try:
            with self._engine.begin() as conn:
                gone = dispatch_queue.prune(conn, cutoff, _PRUNE_ROWS)
        except DBAPIError as exc:
            log.warning("forgetting finished deliveries failed, trying again later: %s", exc)
            return
        if gone:
            log.info("forgot %d deliveries finished before %s", gone, cutoff.isoformat())

    def _update_gauges(self) -> None:
        if time.monotonic() - self._gauges_at < _GAUGE_PERIOD_S:
            return
        self._gauges_at = time.monotonic()
        try:
            with self._engine.connect() as conn:
                pending, oldest_s = dispatch_queue.backlog(conn, self._clock())
        except DBAPIError as exc:
            log.warning("cannot read the delivery backlog: %s", exc)
            return
        metrics.PENDING.set(pending)
        metrics.OLDEST_PENDING_AGE.set(oldest_s)
