"""The one producer every service publishes through: idempotent, acks=all, with CloudEvents headers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import cast

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from prometheus_client import Counter

from lotlens_common import tracing
from lotlens_common.encoded_headers import encoded_headers
from lotlens_common.envelope import Envelope, cloudevent_headers, encode
from lotlens_common.settings import BROKER_PING_S, KafkaSettings
from lotlens_common.topics import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

# A broker check needs a round trip: a wait with less time left for it says nothing of a stall.
SHORTEST_PING_S = 0.05

Headers = list[tuple[str, str | bytes | None]]


class PublishError(RuntimeError):
    """Kafka did not acknowledge every message: the caller must not report success. `refused`:
    what Kafka answered for those it refused (`message_refused` reads them)."""

    def __init__(self, message: str, unacknowledged: int = 0, refused: Sequence[KafkaError] = ()) -> None:
        super().__init__(message)
        self.unacknowledged = unacknowledged
        self.refused = tuple(refused)


# What a broker answers about a message's form: sent again, it is refused again, however well Kafka
# takes every other message. Not its size (MSG_SIZE_TOO_LARGE, RECORD_LIST_TOO_LARGE): every message
# is under this producer's `message.max.bytes`, so the broker refusing one says the topic's
# `max.message.bytes` is set lower (auto-created at the broker's 1 MB default before the migrate Job
# ran), which clears once it is set back, as an ACL does.
_FORM_REFUSALS = frozenset({KafkaError.INVALID_MSG, KafkaError.INVALID_RECORD})


def message_refused(exc: BaseException) -> bool:
    """Whether Kafka refused these very messages for good, however well it takes others: `produce`
    itself, before sending, for one's size (over `message.max.bytes`: a defect), or the broker for
    their form (every one it did not take). Not the broker failing to take them now (unanswered, a
    timeout, too few in-sync replicas, an ACL, an unknown topic, the topic's size limit) nor another
    failure of `produce`: those clear with the broker or its settings, or refuse every message."""
    if isinstance(exc, PublishError):
        refused = () if exc.unacknowledged else exc.refused
        return bool(refused) and all(error.code() in _FORM_REFUSALS for error in refused)
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(error, KafkaError) and error.code() == KafkaError.MSG_SIZE_TOO_LARGE


PRODUCER_RENEWALS = Counter(
    "lotlens_kafka_producer_renewals_total",
    "Producers replaced because their messages made no progress while a broker answered", ["client"])


# Delivery reports are served every this many messages, and by `flush`. `poll` lets go of the GIL:
# served after every message, a service whose other thread was busy waited for the GIL each time
# (18 instead of 1.4 us a message, measured with a second thread spinning).
_SERVE_REPORTS_EVERY = 1000


class EventProducer:
    """Idempotent, acks=all producer of event envelopes, keyed by job id.

    One thread publishes and flushes through an instance (`ping` may come from another): `flush`
    may replace the librdkafka producer underneath.
    """

    def __init__(self, settings: KafkaSettings, client_name: str) -> None:
        self._config = {
            **settings.client_config(),
            "client.id": client_name,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.max.bytes": MAX_MESSAGE_BYTES,
            "queue.buffering.max.messages": 500_000,
            # Never time a message out (librdkafka's 5 minutes by default): idempotence keeps a
            # partition's order only within librdkafka's own retries. A message failed by its
            # timeout in an outage left the ones queued behind it (a job's later events) to be
            # sent as the broker came back, and its caller sent it again after them. Every caller
            # bounds its own wait (`flush`, `settle`) and a stall renews the producer instead.
            "message.timeout.ms": 0,
        }
        self._client_name = client_name
        self._producer = Producer(self._config)
        self._failures: list[KafkaError] = []
        self._reports = 0
        self._produced = 0
        self._stalled_since: float | None = None
        self._stalled_waits = 0
        self._stall_s = settings.producer_stall_s
        self._generation = 0
        # How many times what was queued was dropped (`discard`, a renewal): each message carries
        # the count it was produced at, so a purge of one produced since is known for no discard's.
        self._purges = 0
        self._report = partial(self._on_delivery, None, None, self._purges)
        # CloudEvents `source`: the component that produced the event.
        self._source = f"/lotlens/{client_name}"

    def publish(self, topic: str, envelope: Envelope, delivered: Callable[[], None] | None = None,
                failed: Callable[[bool], None] | None = None) -> None:
        """Queue one event with its CloudEvents headers; `flush` confirms it (`delivered` and `failed`
        as for `publish_encoded`)."""
        headers: Headers = list(cloudevent_headers(envelope, self._source))
        if tracing.enabled():
            # The job's trace continues in the message's headers and in the envelope itself.
            parent = tracing.job_context(envelope.job_id)
            carrier = _producer_span(topic, envelope.job_id, envelope.type, parent)
            envelope = replace(envelope, trace={**envelope.trace, **carrier})
            headers += _trace_headers(carrier)
        self._produce(topic, envelope.job_id.encode(), encode(envelope), headers, delivered, failed)

    def publish_many(self, topic: str, envelopes: Iterable[Envelope]) -> None:
        """Queue many events in order."""
        for envelope in envelopes:
            self.publish(topic, envelope)

    def publish_encoded(self, topic: str, key: bytes, value: bytes,
                        delivered: Callable[[], None] | None = None,
                        failed: Callable[[bool], None] | None = None) -> None:
        """Queue an envelope `encode` already wrote (the outbox keeps them), with its headers.
        `delivered` is called once Kafka has it, `failed` once it never will (with whether it was
        purged, by `discard` or a renewal, rather than failed, e.g. timed out): from `flush`,
        `settle`, `discard` or a later publish's poll."""
        self._produce(topic, key, value, self._encoded_headers(topic, value), delivered, failed)

    def publish_row(self, topic: str, key: bytes, value: bytes, row: int,
                    delivered: Callable[[int], None], failed: Callable[[int, bool], None]) -> None:
        """`publish_encoded` for the outbox relay: its callbacks are given the row's id. (Two
        callbacks bound to the id per row, each called through a third: with the rows read by
        attribute, 2.3 us more of the relay's thread a row, for each of a job's 50,000.)"""
        self._send(topic, key, value, self._encoded_headers(topic, value),
                   partial(self._on_row_delivery, delivered, failed, row, self._purges))

    def _encoded_headers(self, topic: str, value: bytes) -> Headers:
        # Read from the envelope's head (`encoded_headers`), not parsed whole: 1.3 us a row where it
        # took 1.9-2.0. A new list, the message's own: the trace's headers go on its end.
        headers = cast(Headers, encoded_headers(value, self._source))
        if tracing.enabled():
            # Published after the request that wrote it has ended: its trace is in the envelope.
            doc = orjson.loads(value)
            carrier = _producer_span(topic, str(doc["job_id"]), str(doc["type"]),
                                     tracing.extract(doc.get("trace")))
            headers += _trace_headers(carrier)
        return headers

    def publish_raw(self, topic: str, key: bytes | None, value: bytes | None,
                    headers: Headers) -> None:
        """Queue bytes as they are (dead-lettering keeps the original message intact)."""
        self._produce(topic, key, value, headers)

    def ping(self, timeout_s: float = BROKER_PING_S) -> None:
        """Raise unless a broker answers a metadata request (readiness)."""
        self._producer.list_topics(timeout=timeout_s)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued message is acknowledged; raise `PublishError` otherwise."""
        remaining = self._wait(timeout_s)
        failures, self._failures = self._failures, []
        if remaining or failures:
            # Every caller publishes again after a PublishError: left queued, each retry added one
            # more copy of its messages, all delivered once the broker was back.
            self.discard()
            raise PublishError(f"{remaining} unacknowledged, {len(failures)} failed: "
                               f"{[str(error) for error in failures[:3]]}", remaining, failures)

    def settle(self, timeout_s: float) -> int:
        """Serve delivery reports until every message has its own or `timeout_s` passes; how many
        still wait. Nothing is dropped or raised: each message's callbacks say how it went."""
        remaining = self._wait(timeout_s)
        self._failures = []
        return remaining

    def pending(self) -> int:
        """Messages queued or in flight, without their delivery report yet."""
        return len(self._producer)

    @property
    def generation(self) -> int:
        """How many librdkafka producers this one has started over with (what an older one held
        is gone, its late reports with it)."""
        return self._generation

    def _wait(self, timeout_s: float) -> int:
        """Serve delivery reports until none is awaited or `timeout_s` passes, and watch for a stall
        in that time; how many messages still wait.

        The check that a broker answers (a metadata request) comes out of the wait: after it,
        against a broker that answered nothing, a caller's wait took 2 s more than it asked (the
        gateway's shutdown grace holds its last waits only as long as each takes its own time)."""
        started, reports = time.monotonic(), self._reports
        deadline = started + timeout_s
        # Time is kept for the check, which only a wait without a report needs; else it is waited.
        remaining = self._producer.flush(timeout_s - min(BROKER_PING_S, timeout_s / 2))
        answers = self._broker_answers(deadline) if remaining and self._reports == reports else False
        if remaining:
            remaining = self._producer.flush(max(deadline - time.monotonic(), 0.0))
        progress = not remaining or self._reports != reports
        if answers is None and not progress:
            # Too short to ask a broker: it says nothing of a stall either way. Counted as no stall,
            # a caller's zero-time polls between its long waits kept a stalled producer for good.
            return int(remaining)
        self._watch_stall(bool(answers) and not progress, started, remaining)
        return int(remaining)

    def _watch_stall(self, stalled: bool, started: float, remaining: int) -> None:
        """Start over when messages got no report for `stall_s` of waits in a row while a broker
        answers. One stalled wait is usually one that spanned an outage (the producer recovers
        by itself as the broker comes back), and a broker whose acknowledgements come later than
        a caller's deadline still makes progress; renewed then, the new producer's start-up round
        trips took longer than the deadline again."""
        self._stalled_since = (self._stalled_since or started) if stalled else None
        self._stalled_waits = self._stalled_waits + 1 if stalled else 0
        # Two waits at least: one long flush (30 s) that spanned an outage is not a stall.
        if self._stalled_waits >= 2 and time.monotonic() - (self._stalled_since or 0.0) >= self._stall_s:
            self._renew(remaining)

    def _broker_answers(self, deadline: float) -> bool | None:
        """Whether a broker answers a metadata request before `deadline`; None: too little time to
        ask (a round trip does not fit in a few milliseconds, and librdkafka rounds a timeout under
        1 ms down to none: such a check always failed, and reset the stall count all the same)."""
        left = min(BROKER_PING_S, deadline - time.monotonic())
        if left < SHORTEST_PING_S:
            return None
        try:
            self.ping(left)
        except KafkaException:
            return False
        return True

    def _renew(self, stuck: int) -> None:
        """Drop this producer and start a new one; the caller publishes its messages again.

        After a single broker restarted, librdkafka sometimes keeps a partition it saw without a
        leader waiting for good: its messages were still queued minutes later while the broker
        answered every other client (tests/e2e/test_intake_outage.py failed so once: no job
        completed). Purging in-flight messages too is safe with a new producer id; any already
        written come again, under their event ids, and consumers skip duplicates.
        """
        log.warning("producer %s: %d messages made no progress for %.0f s while a broker answers; "
                    "starting a new one", self._client_name, stuck, self._stall_s)
        self._start_over()

    def _start_over(self) -> None:
        PRODUCER_RENEWALS.labels(self._client_name).inc()
        self._purge(in_flight=True)
        self._producer = Producer(self._config)
        self._generation += 1
        self._failures = []
        self._stalled_since = None
        self._stalled_waits = 0

    def discard(self) -> None:
        """Drop what is still queued and all failure reports so far (the caller sends it again).

        In-flight messages are left alone: purging them would break the idempotent sequence.
        """
        self._purge(in_flight=False)
        self._failures = []

    def _purge(self, in_flight: bool) -> None:
        """Drop what is queued (and in flight), and serve the reports already there.

        The purge does not wait: confluent-kafka hands `blocking` to librdkafka inverted (Producer.c
        sets RD_KAFKA_PURGE_F_NON_BLOCKING when it is true), and the purge that waits holds the GIL
        until every broker thread has taken it (the whole process stopped while one waited on a
        slow DNS answer). So a broker thread can purge, late, a message produced after this call
        returned. Counted as dropped, as a purge was, the next flush returned with such messages
        never in Kafka; each message carries the number of purges before it, and `_purged`
        counts the purge of one produced since as a failure: the flush raises, the caller sends
        again."""
        self._purges += 1
        self._report = partial(self._on_delivery, None, None, self._purges)
        self._producer.purge(in_queue=True, in_flight=in_flight)
        self._producer.poll(0)

    def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: Headers, delivered: Callable[[], None] | None = None,
                 failed: Callable[[bool], None] | None = None) -> None:
        # Its arguments by position: a partial given keywords merged them into a new dict at every
        # report, about 0.3 us more an event (to make and to call), for each of a collection's
        # 50,000 events.
        self._send(topic, key, value, headers,
                   self._report if delivered is None and failed is None
                   else partial(self._on_delivery, delivered, failed, self._purges))

    def _send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers,
              report: Callable[[KafkaError | None, Message], None]) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=report)
                break
            except BufferError:
                # The local queue is full: serve delivery reports to make room, then retry.
                self._producer.poll(0.1)
            except KafkaException as exc:
                if not is_fatal(exc):
                    raise
                self._replace_failed(exc)
        self._produced += 1
        if self._produced % _SERVE_REPORTS_EVERY == 0:
            self._producer.poll(0)

    def _replace_failed(self, exc: KafkaException) -> None:
        """librdkafka failed this producer for good (a fatal idempotence error, e.g. the cluster
        refusing InitProducerId): every later produce fails, so a new one takes over, and the
        caller is told to publish again. Kept, it wedged every service: consumers took it for
        their own client failing and rejoined their group every second, the relay and the stages
        retried forever, and every probe said the process was well."""
        log.error("producer %s failed for good (%s); starting a new one", self._client_name, exc)
        self._start_over()
        raise PublishError(f"the producer failed for good ({exc}); publish again") from exc

    def _on_delivery(self, delivered: Callable[[], None] | None, failed: Callable[[bool], None] | None,
                     purges: int, err: KafkaError | None, _msg: Message) -> None:
        self._reports += 1
        if err is None:
            if delivered is not None:
                delivered()
            return
        purged = self._purged(err, purges)
        if failed is not None:
            failed(purged)

    def _on_row_delivery(self, delivered: Callable[[int], None], failed: Callable[[int, bool], None],
                         row: int, purges: int, err: KafkaError | None, _msg: Message) -> None:
        self._reports += 1
        if err is None:
            delivered(row)
            return
        failed(row, self._purged(err, purges))

    def _purged(self, err: KafkaError, purges: int) -> bool:
        """Whether a message's failure is a purge the caller knows of (else it is kept, for `flush`).
        Kept before the caller's `failed` runs: no `failed` callback discards or flushes, and one
        that did would now clear this failure with the rest."""
        # A message `discard` or a renewal dropped is no failure: the caller sends it again. One
        # produced after the last of them was dropped by none the caller knows of: a failure.
        purged = (err.code() in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)
                  and purges < self._purges)
        if not purged:
            self._failures.append(err)
        return purged


def is_fatal(exc: KafkaException) -> bool:
    """Whether librdkafka has failed the client for good (it must be replaced)."""
    error = exc.args[0] if exc.args else None
    # A message's error says `_FATAL` by its code; its `fatal()` flag was seen unset.
    return isinstance(error, KafkaError) and (error.fatal() or error.code() == KafkaError._FATAL)


def _producer_span(topic: str, job_id: str, event_type: str, parent: Context | None) -> dict[str, str]:
    """Record the publication of a job's event; the W3C carrier naming it (for the consumer)."""
    with tracing.span(f"{topic} publish", SpanKind.PRODUCER, parent,
                      attributes=tracing.messaging(topic, job_id, event_type)):
        return tracing.inject({})


def _trace_headers(carrier: Mapping[str, str]) -> Headers:
    return [(name, value.encode()) for name, value in carrier.items()]
