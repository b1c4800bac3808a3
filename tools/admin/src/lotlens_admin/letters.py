"""Reading the dead-letter topic: each group's dead letters, and the markers that record what an
operator did with one (replayed or discarded), so every command sees the same states.

The markers live in the dead-letter topic itself, next to the letters (a record with no value and
a header naming the letter's position): the topic is the only record, kept with the letters.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from lotlens_common import dead_letters as dl
from lotlens_common.consumer_errors import Patience
from lotlens_common.producer import EventProducer, Headers
from lotlens_common.settings import KafkaSettings

# A dead letter's states: waiting for an operator, sent back to its group, or given up on. The
# first read `dead`, which every dead letter is; `open` says what is left to do.
OPEN, REPLAYED, DISCARDED = "open", "replayed", "discarded"
STATES = (OPEN, REPLAYED, DISCARDED)


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic: where it is, what failed and the original message."""

    position: str  # "<partition>:<offset>" in the dead-letter topic
    group: str
    reason: str
    error: str
    source: str  # "<topic>:<partition>:<offset>" it came from
    key: bytes | None
    value: bytes | None
    headers: Headers

    @property
    def source_topic(self) -> str:
        """The topic the message was consumed from (a replay goes back there)."""
        return self.source.rsplit(":", 2)[0]

    @property
    def event_type(self) -> str:
        """The event type header of the original message, if any."""
        return header(self.headers, "type") or "?"


@dataclass(frozen=True)
class Handled:
    """What an operator did with a dead letter: `replayed` or `discarded` (with why)."""

    state: str
    note: str = ""


@dataclass(frozen=True)
class Letters:
    """The dead letters (one per group and source message; re-deliveries folded) and what was
    done with each one handled, by position."""

    letters: list[DeadLetter]
    handled: dict[str, Handled]

    def state(self, letter: DeadLetter) -> str:
        """`open` (waiting for an operator), `replayed` or `discarded`."""
        done = self.handled.get(letter.position)
        return done.state if done else OPEN


def read_letters(kafka: KafkaSettings, topic: str) -> Letters:
    """Read the whole dead-letter topic, from its start to its current end (each wait for an answer
    at most `kafka.command_timeout_s`, reading on without a message at most `command_patience_s`)."""
    timeout_s = kafka.command_timeout_s
    consumer = Consumer({**kafka.client_config(), "group.id": f"lotlens-admin-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        if metadata.error is not None:
            raise SystemExit(f"cannot read {topic}: {metadata.error}")
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
                for p in metadata.partitions}
        waiting = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in waiting])
        seen: dict[tuple[str, str], DeadLetter] = {}
        handled: dict[str, Handled] = {}
        patience = Patience(kafka.command_patience_s)
        while waiting:
            patience.check()
            for message in consumer.consume(500, 0.2):
                error, partition = message.error(), message.partition() or 0
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    waiting.discard(partition)
                elif patience.is_data(message):
                    _collect(message, seen, handled)
                    if (message.offset() or 0) + 1 >= ends[partition]:
                        waiting.discard(partition)
        return Letters(list(seen.values()), handled)
    finally:
        consumer.close()


def _collect(message: Message, seen: dict[tuple[str, str], DeadLetter], handled: dict[str, Handled]) -> None:
    headers: Headers = [(str(h[0]), h[1]) for h in message.headers() or []]
    if (position := header(headers, dl.REPLAYED)) is not None:
        # A replay wins over a discard: it is what happened to the message (sent back to its
        # group), where a discard is only an intent. A replay racing a discard listed it discarded.
        if handled.get(position, Handled(DISCARDED)).state == DISCARDED:
            handled[position] = Handled(REPLAYED, header(headers, dl.NOTE) or "")
        return
    if (position := header(headers, dl.DISCARDED)) is not None:
        handled.setdefault(position, Handled(DISCARDED, header(headers, dl.NOTE) or ""))
        return
    letter = DeadLetter(
        position=f"{message.partition()}:{message.offset()}",
        group=header(headers, dl.GROUP) or "?", reason=header(headers, dl.REASON) or "?",
        error=header(headers, dl.ERROR) or "",
        source=":".join(header(headers, h) or "?" for h in (dl.SOURCE_TOPIC, dl.SOURCE_PARTITION,
                                                             dl.SOURCE_OFFSET)),
        key=message.key(), value=message.value(), headers=headers)
    # A crash between dead-lettering and storing the offset dead-letters the same message again.
    seen.setdefault((letter.group, letter.source), letter)


def header(headers: Headers, name: str) -> str | None:
    """A header's value as text (None: absent)."""
    for key, value in headers:
        if key == name and value is not None:
            return value.decode(errors="replace") if isinstance(value, bytes) else value
    return None


def mark(producer: EventProducer, topic: str, letters: list[DeadLetter], state: str, note: str = "") -> None:
    """Record in the dead-letter topic that these letters were replayed or discarded."""
    marker = dl.REPLAYED if state == REPLAYED else dl.DISCARDED
    for letter in letters:
        headers: Headers = [(marker, letter.position.encode())]
        if note:
            headers.append((dl.NOTE, note.encode()))
        producer.publish_raw(topic, letter.key, None, headers)
    producer.flush()
