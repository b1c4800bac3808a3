"""Replaying the record topics into the shadow tables, up to given end offsets, resumably.

Each consumed batch is applied with the live store's `apply_batch` and committed together with
the offsets it reached, so a killed replay resumes exactly where its last commit left it. Events
that cannot be read or applied are skipped: the live store dead-lettered them and never applied
them either.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from sqlalchemy import Connection, Engine, text

from lotlens_common.consumer_errors import Patience
from lotlens_common.envelope import Envelope, FutureEvent, UndecodableEvent, decode
from lotlens_common.kafka import is_transient
from lotlens_common.row_sets import json_rows
from lotlens_common.settings import KafkaSettings
from lotlens_result_store.handlers import apply_batch
from lotlens_result_store.shadow import CHECKPOINT, use_shadow
from lotlens_result_store.shadow_state import record_skipped

log = logging.getLogger(__name__)

Partition = tuple[str, int]
# An event's place in the log, as operators read and write it: "topic:partition:offset".
Position = str


class RebuildRefused(RuntimeError):
    """An expected reason for a rebuild to stop (the operator gets its message, not a traceback)."""


class FutureEventInLog(RebuildRefused):
    """An event newer than this code: skipping it unasked would leave the rebuilt tables without
    it, so the rebuild stops at it (the newer release starts over: `--restart`)."""


def position(topic: str, partition: int, offset: int) -> Position:
    """An event's position as `topic:partition:offset`."""
    return f"{topic}:{partition}:{offset}"


@dataclass
class Progress:
    """How far a replay round is, for the operator."""

    total: int
    done: int = 0
    skipped: int = 0
    started: float = 0.0

    def line(self) -> str:
        """One line: events replayed, share, rate."""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        share = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.done:,}/{self.total:,} events ({share:.0f}%), {self.done / elapsed:,.0f} events/s, "
                f"{self.skipped} skipped")


Report = Callable[[Progress], None]


class RecordLog:
    """The record topics' partitions and their offsets."""

    def __init__(self, kafka: KafkaSettings, topics: Sequence[str]) -> None:
        self._kafka, self._topics = kafka, list(topics)

    def consumer(self) -> Consumer:
        """A consumer of no group's (nothing is committed): the checkpoint is the position."""
        # A fetch the broker holds for want of data (a partition read to its end) held the others'
        # first messages back for the default 500 ms; with data it is answered at once anyway.
        return Consumer({**self._kafka.client_config(), "group.id": f"lotlens-rebuild-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "enable.auto.offset.store": False,
                         "fetch.max.bytes": 52_428_800, "fetch.wait.max.ms": 50})

    def assigned(self, partitions: list[TopicPartition]) -> Consumer:
        """A consumer assigned `partitions`, their topics' leaders learnt first: assigned before it
        knew them, it looked its start offsets up only at librdkafka's retry, 0.5 s later."""
        consumer = self.consumer()
        # The broker away: the lookups are retried, and the replay waits that out with patience.
        with contextlib.suppress(KafkaException):
            for topic in sorted({partition.topic for partition in partitions}):
                consumer.list_topics(topic, timeout=self._kafka.command_timeout_s)
        consumer.assign(partitions)
        return consumer

    def patience(self) -> Patience:
        """How a replay reads on through a broker away for a while (a restart)."""
        return Patience(self._kafka.command_patience_s)

    def watermarks(self) -> dict[Partition, tuple[int, int]]:
        """(first, end) offset of every partition of the record topics, now."""
        consumer, timeout_s = self.consumer(), self._kafka.command_timeout_s
        try:
            found: dict[Partition, tuple[int, int]] = {}
            metadata = consumer.list_topics(timeout=timeout_s)
            for topic in self._topics:
                for partition in metadata.topics[topic].partitions:
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                               timeout=timeout_s)
                    found[(topic, partition)] = (int(low), int(high))
            return found
        finally:
            consumer.close()


def checkpoint(conn: Connection) -> dict[Partition, int]:
    """The next offset to replay of each partition the rebuild has started on."""
    rows = conn.execute(text(f"SELECT topic, partition, next_offset FROM {CHECKPOINT}")).all()
    return {(str(topic), int(partition)): int(offset) for topic, partition, offset in rows}


def remaining(conn: Connection, marks: dict[Partition, tuple[int, int]]) -> int:
    """How many events the shadow tables lack up to `marks`."""
    done = checkpoint(conn)
    return sum(max(0, high - max(low, done.get(tp, 0))) for tp, (low, high) in marks.items())


def replay(engine: Engine, log_: RecordLog, marks: dict[Partition, tuple[int, int]], batch_size: int,
           report: Report, skip: frozenset[Position] = frozenset()) -> Progress:
    """Apply every event before the end offsets in `marks` that the shadow tables lack; a future
    version event is skipped only when named in `skip`."""
    with engine.connect() as conn:
        done = checkpoint(conn)
        progress = Progress(total=remaining(conn, marks), started=time.monotonic())
    ends = {tp: high for tp, (low, high) in marks.items() if max(low, done.get(tp, 0)) < high}
    if not ends:
        return progress
    consumer = log_.assigned([TopicPartition(t, p, done.get((t, p), OFFSET_BEGINNING)) for t, p in ends])
    # Where each partition stands: a batch asks for no more events than are left before the ends,
    # so the last one returns once they are in (asked for a whole batch, it waited out its second).
    at = {tp: max(marks[tp][0], done.get(tp, 0)) for tp in ends}
    last_report, patience = time.monotonic(), log_.patience()
    try:
        while ends:
            patience.check()
            left = sum(ends[tp] - at[tp] for tp in ends)
            messages = [m for m in consumer.consume(min(batch_size, left), 1.0) if patience.is_data(m)]
            wanted = [m for m in messages if (m.offset() or 0) < ends[_partition(m)]]
            reached = _reached(consumer, ends)
            at.update(reached)
            progress.skipped += _apply(engine, wanted, reached, skip)
            progress.done += len(wanted)
            if messages:
                patience.worked()
            for tp, offset in reached.items():
                if offset >= ends[tp]:
                    consumer.pause([TopicPartition(*tp)])
                    del ends[tp]
            if time.monotonic() - last_report >= 1.0 or not ends:
                report(progress)
                last_report = time.monotonic()
    finally:
        consumer.close()
    return progress


def _partition(message: Message) -> Partition:
    return (message.topic() or "", message.partition() or 0)


def _reached(consumer: Consumer, ends: dict[Partition, int]) -> dict[Partition, int]:
    """Per partition: every offset before this is applied once the batch commits (the position
    also moves past transaction markers, which are never delivered)."""
    positions = consumer.position([TopicPartition(t, p) for t, p in ends])
    return {(tp.topic, tp.partition): min(tp.offset, ends[(tp.topic, tp.partition)])
            for tp in positions if tp.offset >= 0}


def _apply(engine: Engine, messages: list[Message], reached: dict[Partition, int],
           skip: frozenset[Position]) -> int:
    """Apply a batch and record the offsets reached and the events skipped, in one shadow
    transaction; returns how many events were skipped."""
    decoded: list[tuple[Position, Envelope]] = []
    skipped: list[tuple[str, int, int, str]] = []
    for message in messages:
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0
        at = position(topic, partition, offset)
        try:
            decoded.append((at, decode(message.value() or b"")))
        except FutureEvent as exc:
            if at not in skip:
                # The release that reads it has other event models, so another projection version:
                # it refuses to resume this shadow, and starts over (--restart).
                raise FutureEventInLog(
                    f"{exc} at {at}: rebuild with the newer release that wrote it, with --restart (it "
                    f"cannot resume this release's shadow), or skip it on purpose with --skip {at} "
                    "(the swap then needs --allow-skipped)") from exc
            log.warning("skipping %s as asked (--skip): %s", at, exc)
            skipped.append((topic, partition, offset, f"future-version, skipped by --skip: {exc}"))
        except UndecodableEvent as exc:
            log.warning("skipping an unreadable message at %s: %s", at, exc)
            skipped.append((topic, partition, offset, f"undecodable: {exc}"))
    with engine.begin() as conn:
        use_shadow(conn)
        for at, why in _apply_isolating_poison(conn, decoded):
            t, p, o = at.rsplit(":", 2)
            skipped.append((t, int(p), int(o), why))
        record_skipped(conn, skipped)
        if reached:
            conn.execute(text(
                f"INSERT INTO {CHECKPOINT} (topic, partition, next_offset) "
                "SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
                "AS v(topic text, partition int, next_offset bigint) ON CONFLICT (topic, partition) "
                "DO UPDATE SET next_offset = greatest(rebuild_offsets.next_offset, excluded.next_offset)"),
                {"rows": json_rows({"topic": topic, "partition": partition, "next_offset": offset}
                                   for (topic, partition), offset in reached.items())})
    return len(skipped)


def _apply_isolating_poison(conn: Connection, decoded: list[tuple[Position, Envelope]]
                            ) -> list[tuple[Position, str]]:
    """The batch at once, or else one by one without the events that fail (as the live consumer
    dead-letters them); returns the positions skipped and why."""
    if not decoded:
        return []
    try:
        with conn.begin_nested():
            apply_batch(conn, [envelope for _, envelope in decoded])
        return []
    except Exception as exc:
        if is_transient(exc):
            raise
        log.warning("batch of %d failed (%s); applying one by one", len(decoded), exc)
    skipped = []
    for at, envelope in decoded:
        try:
            with conn.begin_nested():
                apply_batch(conn, [envelope])
        except Exception as exc:
            if is_transient(exc):
                raise
            skipped.append((at, f"projection failed: {exc}"))
            log.warning("skipping %s %s of job %s at %s: %s", envelope.type, envelope.event_id,
                        envelope.job_id, at, exc)
    return skipped
