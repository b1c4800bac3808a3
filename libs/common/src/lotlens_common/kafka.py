"""The one consumer loop every service uses (the producer: `lotlens_common.producer`).

Delivery is at-least-once: a consumer stores a message's offset only after the handler's effects
are durable, so a crash re-delivers and handlers must be idempotent. Poison messages go to the
dead-letter topic with the error and the partition keeps flowing; transient failures (database
or broker down) are retried without moving the offset, and a shutdown during such a retry leaves
the message for the next run (it is not poison).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from lotlens_common import dead_letters, tracing
from lotlens_common.consumer_lag import LagMonitor
from lotlens_common.envelope import (
    TYPE_HEADER,
    Envelope,
    FutureEvent,
    UndecodableEvent,
    decode,
)
from lotlens_common.logs import log_context
from lotlens_common.ops import heartbeat
from lotlens_common.producer import EventProducer, Headers, PublishError, is_fatal
from lotlens_common.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)



def _carrier(message: Message, envelope: Envelope) -> dict[str, str]:
    """The trace context a message carries: its headers', else its envelope's."""
    found = {str(name): text for name, value in cast(Headers, message.headers() or [])
             if name in tracing.TRACE_KEYS and (text := _text(value)) is not None}
    return found if "traceparent" in found else envelope.trace


BatchHandler = Callable[[Sequence[Envelope]], None]

# The one list of failures that mean "the world is down, try again" rather than "this message is
# bad" (PostgreSQL or the broker unreachable), for every consumer and loop. Nothing a message
# waits for belongs here: its retry holds every partition of the consumer, not the message's.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, PublishError)


def is_transient(exc: BaseException) -> bool:
    """One of TRANSIENT_ERRORS, but for a statement PostgreSQL refuses however often it is tried.
    psycopg2 calls these OperationalErrors too; retried as an outage, each held its consumer on
    the batch for good (and past `max.poll.interval.ms` the next replica took it and stuck too):
    SQLSTATE class 54, "program limit exceeded" (a jsonb value over 256 MB, an index row over
    2,704 bytes), and 57014, a statement cancelled by `statement_timeout` (a slow query: the same
    statement is as slow the next time). Such a batch is handled one by one instead."""
    if isinstance(exc, DBAPIError) and (str(getattr(exc.orig, "pgcode", None) or "").startswith("54")
                                        or timed_out(exc)):
        return False
    return isinstance(exc, TRANSIENT_ERRORS)


def timed_out(exc: BaseException) -> bool:
    """Whether PostgreSQL cancelled the statement (SQLSTATE 57014: `statement_timeout`, or an
    operator's `pg_cancel_backend`)."""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "pgcode", None) == "57014"


DEAD_LETTERS = Counter("lotlens_dead_letters_total",
                       "Messages a consumer group sent to the dead-letter topic", ["group", "reason"])


@dataclass(frozen=True)
class ConsumerSpec:
    """What a service consumes and how."""

    group_id: str
    topics: Sequence[str]
    handler: BatchHandler
    poison_attempts: int = 3
    # The event types the handler acts on (None: all). Others are passed over by their `type`
    # header, unread: the translator reads the submissions topic for cancellations alone, and
    # decoding its 50,000 LotSubmitted events per job was a fifth of its CPU.
    event_types: frozenset[str] | None = None


class _Interrupted(Exception):
    """`stop` was set while a transient failure was retried: the message is unsettled, not poison."""


def run_consumer(settings: KafkaSettings, topics: TopicSettings, spec: ConsumerSpec,
                 producer: EventProducer, stop: threading.Event,
                 make_consumer: Callable[[dict[str, str | int | float | bool]], Consumer] = Consumer) -> None:
    """Consume until `stop` is set; each batch is handled, then its offsets are stored."""
    group = settings.group_prefix + spec.group_id
    config: dict[str, str | int | float | bool] = {
        **settings.client_config(),
        "group.id": group,
        "session.timeout.ms": settings.session_timeout_ms,
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 52_428_800,
        # Long enough for a batch whose statement times out (the workers' statement_timeout,
        # 300 s), then its slow event alone (300 s more) and the rest of it: past this the member
        # leaves the group, its stored offsets are never committed and the next one starts over.
        "max.poll.interval.ms": 900_000,
    }
    if settings.group_instance_id:
        config["group.instance.id"] = f"{settings.group_instance_id}-{spec.group_id}"
    lag = LagMonitor(settings.client_config(), group, settings.lag_interval_s)
    for reason in dead_letters.REASONS:  # at 0 from the start: an alert takes increase() of them
        DEAD_LETTERS.labels(group=group, reason=reason)

    def on_assign(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Logged: how long a restarted instance takes to get its partitions back is its recovery.
        log.info("%s: %d partitions assigned", group, len(partitions))
        lag.assigned(partitions)

    def on_revoke(revoking: Consumer, partitions: list[TopicPartition]) -> None:
        lag.revoked(partitions)
        _commit_on_revoke(revoking, partitions)

    def join() -> Consumer:
        log.info("%s: joining as %s", group, config.get("group.instance.id", "a dynamic member"))
        joined = make_consumer(config)
        joined.subscribe(list(spec.topics), on_assign=on_assign, on_revoke=on_revoke,
                         on_lost=lambda _c, ps: lag.revoked(ps))
        return joined

    consumer = join()
    lag_stop = threading.Event()
    threading.Thread(target=lag.run, args=(lag_stop,), name=f"lag-{spec.group_id}", daemon=True).start()
    try:
        while not stop.is_set():
            heartbeat(_loop_name())
            try:
                messages = consumer.consume(settings.consume_batch_size, settings.consume_batch_timeout_s)
                for batch in _by_bytes([m for m in messages if _is_data(m)], settings.consume_batch_bytes):
                    settled = _handle_batch(batch, group, spec, topics, producer, stop)
                    for message in settled:
                        _store_offset(consumer, message, group)
                    if len(settled) < len(batch):
                        break  # `stop` interrupted it: what follows stays unread for the next run
            except KafkaException as exc:
                if not is_fatal(exc):
                    raise
                # The client is unusable for good. Seen after a cut connection to the broker: a
                # static member whose JoinGroup answer was lost joins again, and the broker fences
                # the member id it had. Offsets not yet committed are read again (handlers are
                # idempotent); a new client rejoins under the same instance id.
                log.warning("%s: consumer failed for good (%s); joining again", group, exc)
                try:
                    lag.revoked(consumer.assignment())
                    consumer.close()
                except (KafkaException, RuntimeError) as closing:  # a failed client may refuse
                    log.debug("closing a failed consumer: %s", closing)
                stop.wait(1.0)  # were it to fail again at once, not in a tight loop
                consumer = join()
    finally:
        lag_stop.set()
        consumer.close()


def _store_offset(consumer: Consumer, message: Message, group: str) -> None:
    """Store a handled message's offset, unless its partition was taken away meanwhile.

    librdkafka refuses to store an offset of a partition no longer assigned (`_STATE`, since
    1.9): a rebalance served within the `consume` call that returned the message. That is no
    reason to exit: the partition's new owner reads it from the last commit (handlers are
    idempotent)."""
    try:
        consumer.store_offsets(message=message)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if not (isinstance(error, KafkaError) and error.code() == KafkaError._STATE):
            raise
        log.info("%s: %s [%s] is no longer assigned here; offset %s not stored", group,
                 message.topic(), message.partition(), message.offset())


def _commit_on_revoke(consumer: Consumer, _partitions: list[TopicPartition]) -> None:
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:  # nothing stored yet is a normal case
        log.debug("commit on revoke: %s", exc)


def _is_data(message: Message) -> bool:
    error = message.error()
    if error is None:
        return True
    if error.code() == KafkaError._PARTITION_EOF:
        return False
    if error.fatal() or error.code() == KafkaError._FATAL:
        raise KafkaException(error)
    # Anything else librdkafka retries by itself (a topic not in the metadata yet, a broker
    # unreachable for a moment): exiting over it would turn a blip into a restart loop.
    log.warning("consumer: %s", error.str())
    return False


def _by_bytes(messages: list[Message], max_bytes: int) -> Iterator[list[Message]]:
    """The messages in order, in batches whose values hold at most `max_bytes` together (a bigger
    message alone). A handler writes a batch's rows in one statement, and a backlog of lots that
    each list a megabyte of missing images made one of 290 MB, which PostgreSQL refuses (a jsonb
    value holds at most 256 MB)."""
    batch: list[Message] = []
    size = 0
    for message in messages:
        length = len(message.value() or b"")
        if batch and size + length > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(message)
        size += length
    if batch:
        yield batch


def _handle_batch(batch: list[Message], group: str, spec: ConsumerSpec, topics: TopicSettings,
                  producer: EventProducer, stop: threading.Event) -> list[Message]:
    """Handle a batch; return its settled prefix (handled, skipped or dead-lettered), whose
    offsets may be stored: all of it, unless `stop` interrupted a retry."""
    decoded: list[tuple[Message, Envelope]] = []
    try:
        for message in batch:
            if not _wanted(message, group, spec.event_types):
                continue
            try:
                envelope = decode(message.value() or b"")
            except UndecodableEvent as exc:
                _dead_letter_durably(producer, topics, message, group, exc, stop)
                continue
            if spec.event_types is None or envelope.type in spec.event_types:
                decoded.append((message, envelope))
    except _Interrupted as interrupted:  # nothing decoded so far was handled
        first = decoded[0][0] if decoded else interrupted.args[0]
        return batch[:batch.index(first)]
    try:
        if decoded:
            consumed = ([tracing.Consumed(message.topic() or "", envelope.job_id, envelope.type,
                                          _carrier(message, envelope)) for message, envelope in decoded]
                        if tracing.enabled() else [])
            with tracing.consuming(group, consumed):
                _handle_decoded(decoded, group, spec, topics, producer, stop)
        unsettled = None
    except _Interrupted as interrupted:
        unsettled = interrupted.args[0]
    return batch if unsettled is None else batch[:batch.index(unsettled)]


def _handle_decoded(decoded: list[tuple[Message, Envelope]], group: str, spec: ConsumerSpec,
                    topics: TopicSettings, producer: EventProducer, stop: threading.Event) -> None:
    first = decoded[0][0]
    try:
        _retry_transient(lambda: spec.handler([envelope for _, envelope in decoded]), stop, first)
    except _Interrupted:
        raise
    except Exception as exc:
        # Isolate the poison message: the rest of the batch must still go through.
        log.warning("batch of %d failed (%s); handling one by one", len(decoded), exc)
        for message, envelope in decoded:
            with log_context(job_id=envelope.job_id):
                _handle_alone(message, envelope, group, spec, topics, producer, stop)


def _handle_alone(message: Message, envelope: Envelope, group: str, spec: ConsumerSpec,
                  topics: TopicSettings, producer: EventProducer, stop: threading.Event) -> None:
    for attempt in range(1, spec.poison_attempts + 1):
        heartbeat(_loop_name())  # each try may take a whole `statement_timeout`: the loop moves on
        try:
            _retry_transient(lambda: spec.handler([envelope]), stop, message)
            return
        except _Interrupted:
            raise
        except Exception as exc:
            # A timed-out statement is not tried again: each try costs a whole statement_timeout,
            # and the batch's try and this one are all that fit in `max.poll.interval.ms`.
            if attempt == spec.poison_attempts or timed_out(exc):
                log.error("dead-lettering %s %s of job %s: %s", envelope.type, envelope.event_id,
                          envelope.job_id, exc)
                _dead_letter_durably(producer, topics, message, group, exc, stop)


def _dead_letter_durably(producer: EventProducer, topics: TopicSettings, message: Message, group: str,
                         error: BaseException, stop: threading.Event) -> None:
    """Dead-letter the message and wait until Kafka has it, sending it again after a transient
    failure, before anything else: queued, it waited for a later flush, where a failed delivery
    went to whichever caller flushed (a handler sharing the producer, retried without it) or out
    of the loop, and the offset moved past a message with no dead letter anywhere."""
    def send() -> None:
        dead_letter(producer, topics, message, group, error)
        producer.flush()

    _retry_transient(send, stop, message)
    DEAD_LETTERS.labels(group=group, reason=dead_letter_reason(error)).inc()


def _retry_transient(call: Callable[[], None], stop: threading.Event, message: Message) -> None:
    """Run `call`, retrying transient failures; raise `_Interrupted(message)` if `stop` is set
    meanwhile (the failure says nothing about the message, so it must not count as poison)."""
    delay = 0.5
    while True:
        try:
            call()
            return
        except TRANSIENT_ERRORS as exc:
            if not is_transient(exc):
                raise
            if stop.is_set():
                raise _Interrupted(message) from exc
            heartbeat(_loop_name())  # waiting for a dependency is not being stuck
            log.warning("transient failure, retrying in %.1fs: %s", delay, exc)
            stop.wait(delay)
            delay = min(delay * 2, 15.0)


def _wanted(message: Message, group: str, event_types: frozenset[str] | None) -> bool:
    """False for a replayed dead letter not addressed to this consumer group, and for an event
    whose `type` header names a type the handler does not act on. An event without a readable
    `type` header is read: its payload decides."""
    # A consumed message's headers are a list of pairs (the stub also allows a producer's dict).
    for name, value in cast(Headers, message.headers() or []):
        if name == TYPE_HEADER:
            event_type = _text(value)
            if event_types is not None and event_type is not None and event_type not in event_types:
                return False
        elif name == dead_letters.REPLAY_GROUP and _text(value) != group:
            return False
    return True


def _text(value: str | bytes | None) -> str | None:
    """A header's text; None when it is absent or not UTF-8 (a header must not stop the loop)."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None
    return value


def dead_letter(producer: EventProducer, topics: TopicSettings, message: Message, group: str,
                error: BaseException) -> None:
    """Send a message this group cannot handle to the dead-letter topic, with where it came
    from, which group failed and why (the original key, value and headers kept intact)."""
    reason = dead_letter_reason(error)
    headers: Headers = [(str(header[0]), header[1]) for header in message.headers() or []
                        if header[0] not in dead_letters.DLQ_HEADERS]
    headers += [
        (dead_letters.ERROR, str(error)[:2000].encode()),
        (dead_letters.REASON, reason.encode()),
        (dead_letters.GROUP, group.encode()),
        (dead_letters.SOURCE_TOPIC, (message.topic() or "").encode()),
        (dead_letters.SOURCE_PARTITION, str(message.partition()).encode()),
        (dead_letters.SOURCE_OFFSET, str(message.offset()).encode()),
    ]
    producer.publish_raw(topics.dead_letter, message.key(), message.value(), headers)


def dead_letter_reason(error: BaseException) -> str:
    """Why a message is dead-lettered: a newer release wrote it, it is not a LotLens event at all,
    or its handler kept failing."""
    return (dead_letters.FUTURE_VERSION if isinstance(error, FutureEvent)
            else dead_letters.UNDECODABLE if isinstance(error, UndecodableEvent)
            else dead_letters.HANDLER_FAILED)


def _loop_name() -> str:
    """The liveness name of the consumer loop running on this thread."""
    return f"consumer:{threading.current_thread().name}"
