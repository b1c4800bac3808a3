"""The due-queue loop: claim due deliveries, make each attempt, hand its outcome to the recorder.

One thread claims; a pool of `webhook_concurrency` threads makes the attempts; one recorder thread
(`recorder.py`) stores their outcomes in groups. An attempt's slot is free again as soon as its
HTTP call ends, while its outcome waits for the recorder: holding the slot until the outcome was
stored left the pool idle for every flush and commit (a 2,000-URL job went out at under 600 a
second). At most `UNRECORDED_PER_SLOT` outcomes per slot may wait, so a recorder that cannot reach
Kafka or PostgreSQL soon stops the claims instead of piling up attempts whose leases would run out
unrecorded. A host never has more than `webhook_per_host_concurrency` attempts in flight from this
instance, and rows of a saturated host are not even claimed, so a slow endpoint only ever holds its
own slots; a client never more than `per_client_concurrency`, its rows taken in turns with the
other clients' (`claims.py`), so a client's endpoints that never answer, on as many host names as
it likes, hold only its own share of the slots. An attempt whose outcome was never written (its
instance died) is taken up again once its lease runs out, as interrupted if its POST had started
(`post_marks`), and sent again; the interrupted attempt's record goes to the recorder at once, on
its own, so it is published whatever becomes of the attempt that follows. An attempt that broke
before its POST sent nothing: the recorder hands its claim back (`not_started`), neither an attempt
nor an interruption.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import httpx2
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimedOut

from lotlens_common import tracing
from lotlens_common.clock import utc_now
from lotlens_common.logs import log_context
from lotlens_common.ops import heartbeat, loop_ended
from lotlens_common.producer import EventProducer
from lotlens_common.signing import webhook_headers
from lotlens_webhook_dispatcher import claims, dispatch_queue, metrics, payloads
from lotlens_webhook_dispatcher.config import DispatcherSettings
from lotlens_webhook_dispatcher.delivery import AttemptOutcome, post_webhook
from lotlens_webhook_dispatcher.dispatch_queue import Delivery
from lotlens_webhook_dispatcher.finished_jobs import FinishedJobs
from lotlens_webhook_dispatcher.not_started import (
    NotStarted,
    Unready,
    before_post,
    failed_attempt,
    hand_back,
    unmarked,
)
from lotlens_webhook_dispatcher.outcomes import RetryPolicy, interrupted, judge
from lotlens_webhook_dispatcher.post_marks import PostMarks
from lotlens_webhook_dispatcher.recorder import Recorder
from lotlens_webhook_dispatcher.secrets_cache import SecretsCache

log = logging.getLogger(__name__)

USER_AGENT = "Generation-Service/2.0"
UNRECORDED_PER_SLOT = 4
_GAUGE_PERIOD_S = 5.0
_PRUNE_PERIOD_S = 60.0
_PRUNE_ROWS = 5000
# PostgreSQL down, or every pooled connection busy past the pool's wait (a stall, a failover):
# either passes, and the loop tries again.
_DATABASE_DOWN = (DBAPIError, PoolTimedOut)


class LeaseLost(RuntimeError):
    """Another instance took the attempt over while this one stalled; it must not send."""


class RecorderEnded(RuntimeError):
    """The recorder thread ended while the claims went on: nothing claimed would be recorded."""


class Dispatcher:
    """Delivers due webhooks until stopped."""

    def __init__(self, engine: Engine, producer: EventProducer,
                 new_transport: Callable[[], httpx2.BaseTransport], settings: DispatcherSettings,
                 clock: Callable[[], datetime] = utc_now, rng: random.Random | None = None) -> None:
        self._engine = engine
        # One HTTP transport per attempt thread: threads sharing one pool queue on its lock.
        self._new_transport = new_transport
        self._local = threading.local()
        self._transports: list[httpx2.BaseTransport] = []
        self._settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._policy = RetryPolicy(settings.webhook_retry_intervals_s, settings.webhook_jitter,
                                   settings.webhook_retry_after_cap_s)
        # Attempts under way, per host and per client (only those with some); and every claimed
        # delivery not yet recorded.
        self._hosts: Counter[str] = Counter()
        self._clients: Counter[str] = Counter()
        self._sending = 0
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._gauges_at = 0.0
        self._pruned_at = -_PRUNE_PERIOD_S
        self._recorder = Recorder(engine, producer, settings.topics.webhooks, settings.lease_s, clock,
                                  self._forget)
        self._finished_jobs = FinishedJobs(engine)
        self._secrets = SecretsCache(engine, settings.webhook_secrets_cache_s, clock)
        self._post_marks = PostMarks(engine, settings.lease_s, clock)

    def hosts_in_flight(self) -> dict[str, int]:
        """Attempts under way per host (the per-host limit's bookkeeping)."""
        with self._lock:
            return dict(self._hosts)

    def clients_in_flight(self) -> dict[str, int]:
        """Attempts under way per client (the per-client limit's bookkeeping)."""
        with self._lock:
            return dict(self._clients)

    def wake(self) -> None:
        """Claim at once (deliveries were just scheduled) instead of at the next poll."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Claim and deliver until `stop` is set; attempts under way are finished and recorded first."""
        s = self._settings
        attempts_done = threading.Event()
        recorder = threading.Thread(target=self._recorder.run, args=(attempts_done,),
                                    name="webhook-recorder", daemon=True)
        recorder.start()
        try:
            with ThreadPoolExecutor(max_workers=s.webhook_concurrency, thread_name_prefix="webhook") as pool:
                while not stop.is_set():
                    self._check(recorder)
                    heartbeat("deliveries")
                    self._recorder.keep_leases()  # here: the recorder's thread may be waiting on Kafka
                    self._wake.clear()
                    try:
                        claimed = self._claim()
                    except _DATABASE_DOWN as exc:
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

    @staticmethod
    def _check(recorder: threading.Thread) -> None:
        """Stop claiming once the recorder is gone, `/livez` failing (the process restarts).

        Unwatched, a recorder ended by an error claimed on until 256 outcomes waited unrecorded
        (their POSTs out, each sent again by another instance after its lease), then nothing
        more, while `/livez` stayed green.
        """
        if not recorder.is_alive():
            loop_ended("deliveries")
            raise RecorderEnded("the webhook recorder thread ended: no outcome would be recorded")

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
            # Interruption records waiting for Kafka are unrecorded outcomes too: their deliveries,
            # handed back, are no longer in flight, and uncounted the records grew for a whole outage.
            unrecorded = len(self._in_flight) + self._recorder.interruptions_waiting()
            room = claims.Room(
                slots=min(s.webhook_concurrency - self._sending,
                          UNRECORDED_PER_SLOT * s.webhook_concurrency - unrecorded),
                per_host=s.webhook_per_host_concurrency, per_client=s.per_client_concurrency,
                hosts=dict(self._hosts), clients=dict(self._clients))
            mine = list(self._in_flight)
        if room.slots <= 0:
            return []
        with self._engine.begin() as conn:
            claimed = claims.claim(conn, self._clock(), room, s.lease_s, mine)
        with self._lock:
            self._hosts.update(d.host for d in claimed)
            self._clients.update(d.client_id for d in claimed)
            self._sending += len(claimed)
            self._in_flight.update(d.delivery_id for d in claimed)
            metrics.IN_FLIGHT.set(self._sending)
        for delivery in claimed:
            metrics.CLIENT_IN_FLIGHT.labels(metrics.client_label(delivery.client_id, s.clients)).inc()
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
        """The attempt's HTTP call is over: its slot (and its host's and client's) can take another claim."""
        with self._lock:
            # Kept at zero, every host ever sent to stayed: per-lot webhooks to many hosts grew
            # the counts without bound.
            _count_off(self._hosts, delivery.host)
            _count_off(self._clients, delivery.client_id)
            self._sending -= 1
            metrics.IN_FLIGHT.set(self._sending)
        label = metrics.client_label(delivery.client_id, self._settings.clients)
        metrics.CLIENT_IN_FLIGHT.labels(label).dec()
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
            self._recorder.finish(delivery, lost)
            if not lost.record_only:
                return  # interrupted too often: given up
        started = self._clock()
        try:
            outcome = self._send(delivery)
        except NotStarted as broke:  # nothing sent: not left to the lease, never an interruption
            if broke.passes:  # the recorder undoes the claim
                self._recorder.finish(delivery, hand_back(
                    delivery, broke, self._clock(), self._policy,
                    timedelta(hours=self._settings.webhook_unready_give_up_h), self._rng))
                return
            # A spent attempt is stored only marked (`record_many`): the mark, not the fencing
            # number, tells this claim from a takeover of it that may have sent the attempt.
            if not broke.marked:
                try:
                    held = self._post_marks.mark(delivery)
                except Exception as mark_error:  # an end, not an endless retake of the same attempt
                    self._recorder.finish(delivery, unmarked(delivery, broke, mark_error, self._clock(),
                                                             self._policy, self._rng))
                    return
                if not held:
                    raise LeaseLost(delivery.delivery_id) from broke
            outcome = failed_attempt(delivery, broke)
        else:  # timed only when made: a defect's unsent attempts, at 0 s, made the p95 read "fast"
            metrics.ATTEMPT_SECONDS.labels("success" if outcome.succeeded else "failure").observe(
                outcome.latency_ms / 1000)
        self._recorder.finish(delivery, judge(delivery, outcome, started, self._clock(), self._policy,
                                              self._rng))

    def _send(self, delivery: Delivery) -> AttemptOutcome:
        s = self._settings
        with before_post("key"):
            key = s.shared_key(delivery.client_id)
            if key is None:
                raise Unready("no_key", f"no key for client {delivery.client_id!r} (LOTLENS_CLIENTS)")
        with before_post("payload"):
            job = self._finished_jobs.job(delivery.job_id, delivery.scheduled_at)
            if job is None:
                raise Unready("read_models", "the job is not in the read models (yet)")
            lots = self._finished_jobs.lots_of(delivery.job_id, delivery.webhook_url, delivery.scheduled_at)
            body = payloads.part_body(payloads.head(job), lots, delivery.part, delivery.total_parts,
                                      s.webhook_max_payload_bytes, delivery.plan)
        with before_post("signing"):
            read_before = self._secrets.signing(delivery.client_id)
            if not read_before.live(self._clock()):
                raise _no_secret(delivery)
            transport = self._transport()
            parent = tracing.extract({"traceparent": delivery.traceparent} if delivery.traceparent else None)
        # The secrets are read (kept) before the mark: one PostgreSQL refuses is handed back unspent.
        # Marked as the POST starts (`post_marks`), after the last read. Renewed only when the
        # lease was no longer fresh, a claim that lost PostgreSQL before its hand-back was stored
        # was taken for an interruption though it had sent nothing.
        with before_post("lease"):
            held = self._post_marks.mark(delivery, read_before.version)
        if not held:
            raise LeaseLost(delivery.delivery_id)
        # Signed after the mark, which may wait on a shared write (up to a statement_timeout):
        # timestamped before it, a POST that went out 5 minutes later was refused as too old by
        # every receiver verifying with `standardwebhooks`. Still before the POST: an error (a
        # malformed `whsec_` secret) sent nothing, and escaping it was taken for an interruption.
        with before_post("signing", marked=True):
            # The mark brought the secrets if they changed since the read (a rotation, at once: a
            # receiver switched to the new secret refused the old one's signature): nothing is read
            # here, where PostgreSQL's refusal could no longer hand the claim back.
            secrets = self._secrets.after_mark(delivery.client_id, read_before, held.changed)
            if not secrets:  # a hand-edited table's last secret, its overlap ended during the mark
                raise _no_secret(delivery)
            headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                       "X-Delivery-Attempt": str(delivery.attempt), "X-Job-ID": delivery.job_id,
                       **webhook_headers(key, secrets, delivery.delivery_id,
                                         int(self._clock().timestamp()), body)}
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
        except _DATABASE_DOWN as exc:
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
        except _DATABASE_DOWN as exc:
            log.warning("cannot read the delivery backlog: %s", exc)
            return
        metrics.PENDING.set(pending)
        metrics.OLDEST_PENDING_AGE.set(oldest_s)


def _no_secret(delivery: Delivery) -> Unready:
    # Sent without `webhook-signature`, Standard Webhooks verifiers refused it.
    return Unready("no_secret",
                   f"client {delivery.client_id!r} has no webhook secret yet (the gateway makes it)")


def _count_off(counts: Counter[str], key: str) -> None:
    """One attempt of `key` less under way; a key with none left is dropped."""
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]
