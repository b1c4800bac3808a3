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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimedOut

from lotlens_common import dead_letters, tracing
from lotlens_common.consumer_errors import retried_by_librdkafka
from lotlens_common.consumer_headers import carrier, wanted
from lotlens_common.consumer_lag import LagMonitor
from lotlens_common.consumer_position import (
    FailedTries,
    by_bytes,
    last_of_each_partition,
    rewind,
    store_offset,
)
from lotlens_common.consumer_round import Interrupted, PoolWait, Round, TimedOut, loop_name
from lotlens_common.envelope import Envelope, FutureEvent, UndecodableEvent, decode
from lotlens_common.logs import log_context
from lotlens_common.ops import heartbeat
from lotlens_common.producer import EventProducer, Headers, PublishError, is_fatal
from lotlens_common.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)


BatchHandler = Callable[[Sequence[Envelope]], None]

# The one list of failures that mean "the world is down, try again" rather than "this message is
# bad" (PostgreSQL or the broker unreachable), for every consumer and loop. Nothing a message
# waits for belongs here: its retry holds every partition of the consumer, not the message's.
# A pool whose every connection stays busy past its wait (PostgreSQL stalled, a failover's
# statements hanging) raises no DBAPIError: counted as poison, its events were dead-lettered.
# One that keeps timing out with no database error between stops the heartbeat (`PoolWait`).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, PoolTimedOut,
                                                     PublishError)


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
    # A try begins only this long into a round (one `consume` to the next); a round's first try
    # always does. One that begins then may still take a whole statement_timeout (the workers'
    # 300 s, at most 600 s): 360 s at worst at the default, under `max.poll.interval.ms`. Without
    # it a round of passing tries alone after a timed-out batch (500 events at 0.8 s) ran on past
    # the poll interval. Going back to `consume` costs next to nothing.
    round_tries_s: float = 60.0


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
        # Past this the member leaves the group, its stored offsets are never committed and the
        # partition's next owner starts over (the same events dead-lettered again, round after
        # round). A round, one `consume` to the next, ends at its first try cancelled by the
        # workers' statement_timeout (300 s), and begins no try after `round_tries_s` (60 s): at
        # worst 360 s, and a statement_timeout raised to 10 minutes still fits.
        "max.poll.interval.ms": 660_000,
    }
    if settings.group_instance_id:
        config["group.instance.id"] = f"{settings.group_instance_id}-{spec.group_id}"
    lag = LagMonitor(settings.client_config(), group, settings.lag_interval_s)
    # A restarted static member gets back, without a rebalance, what its old process held: if that
    # died between a cooperative rebalance's two rounds, what it gave up stayed nobody's, unread
    # for good. So once its join gives it partitions it joins once more (its metadata now differs:
    # the broker rebalances). No admin calls here: confluentinc/librdkafka#4605 aborts them at
    # broker restarts. README, "A restart in the middle of a rebalance".
    joined, rebalance = threading.Event(), threading.Event()
    for reason in dead_letters.REASONS:  # at 0 from the start: an alert takes increase() of them
        DEAD_LETTERS.labels(group=group, reason=reason)

    def on_assign(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Logged: how long a restarted instance takes to get its partitions back is its recovery.
        log.info("%s: %d partitions assigned", group, len(partitions))
        lag.assigned(partitions)
        if joined.is_set() and partitions:
            joined.clear()
            rebalance.set()

    def on_revoke(revoking: Consumer, partitions: list[TopicPartition]) -> None:
        lag.revoked(partitions)
        tries.forget(partitions)
        _commit_on_revoke(revoking, partitions)

    def on_lost(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lag.revoked(partitions)
        tries.forget(partitions)

    def subscribe(member: Consumer) -> Consumer:
        member.subscribe(list(spec.topics), on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
        return member

    def join() -> Consumer:
        log.info("%s: joining as %s", group, config.get("group.instance.id", "a dynamic member"))
        if settings.group_instance_id:
            joined.set()
        return subscribe(make_consumer(config))

    tries = FailedTries()
    round_ = Round(group, spec, topics, producer, stop, tries, settings.pool_stuck_after_s)
    consumer = join()
    lag_stop = threading.Event()
    threading.Thread(target=lag.run, args=(lag_stop,), name=f"lag-{spec.group_id}", daemon=True).start()
    try:
        while not stop.is_set():
            heartbeat(loop_name())
            try:
                if rebalance.is_set():
                    rebalance.clear()
                    log.info("%s: joining once more, for a rebalance", group)
                    consumer.unsubscribe()
                    subscribe(consumer)
                messages = consumer.consume(settings.consume_batch_size, settings.consume_batch_timeout_s)
                round_.begin()
                data = [m for m in messages if _is_data(m)]
                done = 0
                for batch in by_bytes(data, settings.consume_batch_bytes):
                    settled, go_on = _handle_batch(batch, round_)
                    for message in last_of_each_partition(settled):
                        store_offset(consumer, message, group)
                    done += len(settled)
                    if not go_on:  # a statement timed out, or `stop`: the rest is read again
                        rewind(consumer, data[done:], group)
                        break
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
                tries.forget_all()
                if not stop.wait(1.0):  # were it to fail again at once, not in a tight loop
                    consumer = join()
    finally:
        lag_stop.set()
        consumer.close()


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
    if not retried_by_librdkafka(error):
        raise KafkaException(error)
    # Anything else librdkafka retries by itself (a topic not in the metadata yet, a broker
    # unreachable for a moment): exiting over it would turn a blip into a restart loop.
    log.warning("consumer: %s", error.str())
    return False


def _handle_batch(batch: list[Message], round_: Round) -> tuple[list[Message], bool]:
    """Handle a batch; return its settled prefix (handled, skipped or dead-lettered), whose
    offsets may be stored, and whether the round goes on: all of it and True, unless `stop`
    interrupted a retry or a statement timed out.

    An undecodable message is dead-lettered once the events before it are settled, not while the
    batch is decoded: lettered first, a round that ended at an event before it (a timeout, or
    `stop` during a retry) left its offset unstored, and it was lettered again when read again,
    by the next round or, after a shutdown, by the next process."""
    group, event_types = round_.group, round_.spec.event_types
    decoded: list[tuple[Message, Envelope]] = []
    try:
        for message in batch:
            if not wanted(message, group, event_types):
                continue
            try:
                envelope = decode(message.value() or b"")
            except UndecodableEvent as exc:
                _handle_traced(decoded, round_)
                decoded = []
                _dead_letter_durably(round_, message, exc)
                continue
            if event_types is None or envelope.type in event_types:
                decoded.append((message, envelope))
        _handle_traced(decoded, round_)
        return batch, True
    except Interrupted as interrupted:
        return batch[:batch.index(interrupted.args[0])], False
    except TimedOut as timed:
        return batch[:batch.index(timed.message) + (1 if timed.settled else 0)], False


def _handle_traced(decoded: list[tuple[Message, Envelope]], round_: Round) -> None:
    """Handle the decoded events (if any) in one span, continuing each event's trace."""
    if not decoded:
        return
    consumed = ([tracing.Consumed(message.topic() or "", envelope.job_id, envelope.type,
                                  carrier(message, envelope)) for message, envelope in decoded]
                if tracing.enabled() else [])
    with tracing.consuming(round_.group, consumed):
        _handle_decoded(decoded, round_)


def _handle_decoded(decoded: list[tuple[Message, Envelope]], round_: Round) -> None:
    """Handle the events in order: together, but those whose batch failed before, or whose own
    try timed out, each alone (a batch holding one would fail again, or time out and end the round
    with nothing done)."""
    if not round_.tries:  # nearly always: none is to be tried alone, and asking each cost 0.16 us
        _handle_together(decoded, round_)
        return
    for alone, run in groupby(decoded, key=lambda pair: round_.tries.alone(pair[0])):
        if not alone:
            _handle_together(list(run), round_)
            continue
        for message, envelope in run:
            with log_context(job_id=envelope.job_id):
                _handle_alone(message, envelope, round_)


def _handle_together(decoded: list[tuple[Message, Envelope]], round_: Round) -> None:
    first = decoded[0][0]
    round_.may_try(first)
    try:
        _retry_transient(lambda: round_.spec.handler([envelope for _, envelope in decoded]),
                         round_, first)
    except Interrupted:
        raise
    except Exception as exc:
        if timed_out(exc):
            # Its slow event is unknown, and each try costs a whole statement_timeout: the round
            # ends here, and the next tries each of these alone.
            log.warning("batch of %d timed out (%s); its events are tried alone", len(decoded), exc)
            round_.tries.isolate(message for message, _ in decoded)
            raise TimedOut(first, False) from exc
        # Isolate the poison message: the rest of the batch must still go through. Marked first:
        # a batch that outlasted `round_tries_s` ends the round before the first try alone, and
        # unmarked, the next round tried the whole batch again, for good (nothing dead-lettered).
        log.warning("batch of %d failed (%s); handling one by one", len(decoded), exc)
        round_.tries.isolate(message for message, _ in decoded)
        for message, envelope in decoded:
            with log_context(job_id=envelope.job_id):
                _handle_alone(message, envelope, round_)


def _handle_alone(message: Message, envelope: Envelope, round_: Round) -> None:
    """Try the event alone until it passes or has failed `poison_attempts` times, counting its
    failed tries of earlier rounds: dead-lettered then. A try that timed out ends the round."""
    spec, tries = round_.spec, round_.tries
    while True:
        round_.may_try(message)
        try:
            _retry_transient(lambda: spec.handler([envelope]), round_, message)
            tries.settled(message)
            return
        except Interrupted:
            raise
        except Exception as exc:
            poison = tries.failed(message) >= spec.poison_attempts
            if poison:
                log.error("dead-lettering %s %s of job %s: %s", envelope.type, envelope.event_id,
                          envelope.job_id, exc)
                _dead_letter_durably(round_, message, exc)
                tries.settled(message)
            if timed_out(exc):
                # Back to `consume` before another try: the slow database may be a brownout.
                if not poison:
                    log.warning("%s %s of job %s timed out alone (%d of %d tries); tried again "
                                "next round", envelope.type, envelope.event_id, envelope.job_id,
                                tries.count(message), spec.poison_attempts)
                raise TimedOut(message, poison) from exc
            if poison:
                return


def _dead_letter_durably(round_: Round, message: Message, error: BaseException) -> None:
    """Dead-letter the message and wait until Kafka has it, sending it again after a transient
    failure, before anything else: queued, it waited for a later flush, where a failed delivery
    went to whichever caller flushed (a handler sharing the producer, retried without it) or out
    of the loop, and the offset moved past a message with no dead letter anywhere."""
    def send() -> None:
        dead_letter(round_.producer, round_.topics, message, round_.group, error)
        round_.producer.flush()

    _retry_transient(send, round_, message)
    DEAD_LETTERS.labels(group=round_.group, reason=dead_letter_reason(error)).inc()


def _retry_transient(call: Callable[[], None], round_: Round, message: Message) -> None:
    """Run `call`, retrying transient failures; raise `Interrupted(message)` if `stop` is set
    meanwhile (the failure says nothing about the message, so it must not count as poison)."""
    delay, stop, pool = 0.5, round_.stop, PoolWait(round_.pool_stuck_after_s)
    while True:
        try:
            call()
            return
        except TRANSIENT_ERRORS as exc:
            if not is_transient(exc):
                raise
            if stop.is_set():
                raise Interrupted(message) from exc
            if pool.still_alive(exc):
                heartbeat(loop_name())  # waiting for a dependency is not being stuck
            log.warning("transient failure, retrying in %.1fs: %s", delay, exc)
            stop.wait(delay)
            delay = min(delay * 2, 15.0)


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
