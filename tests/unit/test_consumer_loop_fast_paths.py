"""The consumer loop's per-message shortcuts give what the general code gave: a consumed batch cut
by bytes, the last message of each partition, whether a message is for this group and handler,
and whether any message is to be tried alone, over random batches (the former code is the reference)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import cast

from confluent_kafka import Message

from lotlens_common import dead_letters
from lotlens_common.consumer_headers import text, wanted
from lotlens_common.consumer_position import FailedTries, by_bytes, last_of_each_partition
from lotlens_common.producer import Headers
from tests.unit.consumer_fakes import FakeMessage


class _Message(FakeMessage):
    """A fake message of any topic, whose value may be absent."""

    def __init__(self, offset: int, value: bytes | None, headers: Headers | None = None,
                 partition: int = 0, topic: str = "t") -> None:
        super().__init__(offset, value or b"", headers, partition)  # type: ignore[arg-type]
        self._value_or_none, self._topic = value, topic

    def value(self) -> bytes:
        return self._value_or_none  # type: ignore[return-value]

    def topic(self) -> str:
        return self._topic


def _former_by_bytes(messages: list[Message], max_bytes: int) -> Iterator[list[Message]]:
    """`by_bytes` before its one-pass sum (the reference)."""
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


def _former_last_of_each_partition(settled: list[Message]) -> list[Message]:
    last: dict[tuple[str | None, int | None], Message] = {}
    for message in settled:
        last[(message.topic(), message.partition())] = message
    return list(last.values())


def _former_wanted(message: Message, group: str, event_types: frozenset[str] | None) -> bool:
    for name, value in cast(Headers, message.headers() or []):
        if name == "type":
            event_type = text(value)
            if event_types is not None and event_type is not None and event_type not in event_types:
                return False
        elif name == dead_letters.REPLAY_GROUP and text(value) != group:
            return False
    return True


def _batch(rng: random.Random) -> list[Message]:
    return [cast(Message, _Message(offset, rng.choice([None, b"", b"x" * rng.randint(1, 50)]),
                                   partition=rng.randint(0, 3), topic=rng.choice(["a", "b"])))
            for offset in range(rng.randint(0, 12))]


def test_a_batch_cut_by_bytes_in_one_pass_is_the_batches_cut_message_by_message() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        messages = _batch(rng)
        total = sum(len(m.value() or b"") for m in messages)
        # Around the batch's own size too: all of it in one part up to exactly its bytes.
        for max_bytes in {1, rng.randint(1, 120), max(total - 1, 1), max(total, 1), total + 1}:
            assert list(by_bytes(messages, max_bytes)) == list(_former_by_bytes(messages, max_bytes))


def test_the_last_message_of_each_partition_is_found_as_the_loop_over_them_found_it() -> None:
    rng = random.Random(11)
    for _ in range(2000):
        settled = _batch(rng)
        assert last_of_each_partition(settled) == _former_last_of_each_partition(settled)


def test_whether_a_message_is_for_this_group_and_handler_is_read_as_before() -> None:
    rng = random.Random(13)
    names = ["type", dead_letters.REPLAY_GROUP, "ce_id", "traceparent", "x"]
    values: list[bytes | str | None] = [b"VisionCompleted", b"LotSubmitted", b"\xff\xfe", None, b"g",
                                        b"other", "g", "VisionCompleted", b""]
    kinds: list[frozenset[str] | None] = [None, frozenset({"VisionCompleted"}), frozenset()]
    for _ in range(5000):
        headers: Headers | None = rng.choice([None, [], [(rng.choice(names), rng.choice(values))
                                                          for _ in range(rng.randint(1, 5))]])
        message = cast(Message, _Message(0, b"{}", headers))
        event_types = rng.choice(kinds)
        assert wanted(message, "g", event_types) == _former_wanted(message, "g", event_types), headers


def test_no_message_is_tried_alone_until_one_is_isolated_and_none_once_all_are_settled() -> None:
    tries = FailedTries()
    first, second = (cast(Message, _Message(offset, b"v")) for offset in (1, 2))
    assert not tries
    tries.isolate([first, second])
    assert tries and tries.alone(first)
    tries.failed(first)
    tries.settled(first)
    assert tries
    tries.settled(second)
    assert not tries
