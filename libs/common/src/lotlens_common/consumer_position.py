"""Where the consumer loop resumes a partition: offsets stored once handled, a partition sought
back to its first message not settled when a round ends early, and the failed tries of each
message tried alone, counted across rounds; and how a consumed batch is cut for its handler."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

log = logging.getLogger("lotlens_common.kafka")

MessageKey = tuple[str, int, int]  # (topic, partition, offset)


def key(message: Message) -> MessageKey:
    return message.topic() or "", message.partition() or 0, message.offset() or 0


class FailedTries:
    """The messages to be tried alone, each with how many of its tries alone failed so far.

    A try cancelled by `statement_timeout` costs a whole statement_timeout, so the loop goes back
    to `consume` after each one (a member away longer than `max.poll.interval.ms` is put out of
    the group, and its stored offsets with it) and the count carries the message's tries over
    from round to round, until it is handled or has had the loop's `poison_attempts`. A round
    also begins no try after `round_tries_s`: the events of a batch that failed are marked here
    before their first try alone, or a round ending there tried the whole batch again next time."""

    def __init__(self) -> None:
        self._failed: dict[MessageKey, int] = {}

    def __bool__(self) -> bool:
        """Whether any message is to be tried alone."""
        return bool(self._failed)

    def alone(self, message: Message) -> bool:
        """Whether the message is to be tried alone (its batch failed, or a try of its own timed out)."""
        return key(message) in self._failed

    def count(self, message: Message) -> int:
        return self._failed.get(key(message), 0)

    def isolate(self, messages: Iterable[Message]) -> None:
        """Try these alone from now on (their batch failed or timed out)."""
        for message in messages:
            self._failed.setdefault(key(message), 0)

    def failed(self, message: Message) -> int:
        """Count one more failed try alone; return how many there were."""
        count = self._failed[key(message)] = self.count(message) + 1
        return count

    def settled(self, message: Message) -> None:
        """The message was handled or dead-lettered: it is tried no more."""
        self._failed.pop(key(message), None)

    def forget(self, partitions: Sequence[TopicPartition]) -> None:
        """The partitions went to another member, which reads them from the last commit."""
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._failed = {k: n for k, n in self._failed.items() if (k[0], k[1]) not in gone}

    def forget_all(self) -> None:
        """The consumer was replaced: its new client reads every partition from the last commit,
        as if each were assigned anew (a count kept from before dead-lettered an event at its
        first failure after the rejoin)."""
        self._failed.clear()


def rewind(consumer: Consumer, unsettled: Sequence[Message], group: str) -> None:
    """Seek each partition back to its first message not settled, so the next `consume` returns it
    again (each consume call's messages moved the fetch position past them)."""
    first: dict[tuple[str, int], int] = {}
    for message in unsettled:
        topic, partition, offset = key(message)
        first[(topic, partition)] = min(offset, first.get((topic, partition), offset))
    for (topic, partition), offset in first.items():
        try:
            consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:
            _unless_taken_away(exc)
            log.info("%s: %s [%s] is no longer assigned here; not sought back to %s", group,
                     topic, partition, offset)


def last_of_each_partition(settled: Sequence[Message]) -> list[Message]:
    """The last message of each partition among a batch's settled prefix: storing its offset moves
    the partition past the settled messages before it too. Stored one by one, every message
    consumed cost a librdkafka call (0.7 us; about 300,000 a 50,000-lot job across the services)."""
    last = {(message.topic(), message.partition()): message for message in settled}
    return list(last.values())


def store_offset(consumer: Consumer, message: Message, group: str) -> None:
    """Store a handled message's offset, unless its partition was taken away meanwhile.

    librdkafka refuses to store an offset of a partition no longer assigned (`_STATE`, since
    1.9): a rebalance served within the `consume` call that returned the message. That is no
    reason to exit: the partition's new owner reads it from the last commit (handlers are
    idempotent)."""
    try:
        consumer.store_offsets(message=message)
    except KafkaException as exc:
        _unless_taken_away(exc)
        log.info("%s: %s [%s] is no longer assigned here; offset %s not stored", group,
                 message.topic(), message.partition(), message.offset())


def _unless_taken_away(exc: KafkaException) -> None:
    """Re-raise anything but librdkafka's "partition not assigned here": `_STATE` for one it knows,
    `_UNKNOWN_PARTITION` for one it never had (a seek says either)."""
    error = exc.args[0] if exc.args else None
    if not (isinstance(error, KafkaError)
            and error.code() in (KafkaError._STATE, KafkaError._UNKNOWN_PARTITION)):
        raise exc


def by_bytes(messages: list[Message], max_bytes: int) -> Iterator[list[Message]]:
    """The messages in order, in batches whose values hold at most `max_bytes` together (a bigger
    message alone). A handler writes a batch's rows in one statement, and a backlog of lots that
    each list a megabyte of missing images made one of 290 MB, which PostgreSQL refuses (a jsonb
    value holds at most 256 MB)."""
    # Nearly always all of them: summed in one pass, 0.05 us a message where a batch built took 0.1.
    if sum([len(message.value() or b"") for message in messages]) <= max_bytes:
        if messages:
            yield messages
        return
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
