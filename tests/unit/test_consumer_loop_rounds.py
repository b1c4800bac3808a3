"""The consumer loop across rounds, with the fake consumer and producer (no broker): what it
remembers of a message from one round to the next (its failed tries, its dead letter), and when
it forgets."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from lotlens_common import consumer_round
from lotlens_common.envelope import Envelope
from tests.unit.consumer_fakes import (
    FakeMessage,
    FencedMessage,
    event,
    outage,
    run,
    statement_timeout,
)


def test_tries_counted_before_the_consumer_joins_again_do_not_dead_letter_after_it() -> None:
    # A client failed for good is replaced, and the new one reads its partitions from the last
    # commit, like a partition revoked and assigned again; the failed tries counted before were
    # kept: 2 of 3, and the event was dead-lettered at its first failure after the rejoin.
    handled: list[str] = []
    calls = 0

    def slow_then_fine(envelopes: Sequence[Envelope]) -> None:
        nonlocal calls
        calls += 1
        if calls <= 4:  # together, alone twice, then once after the rejoin
            raise statement_timeout()
        handled.extend(e.job_id for e in envelopes)

    again = [FakeMessage(0, event(0))]
    consumer, producer = run([again, again, again, [FencedMessage()], again, again], slow_then_fine)

    assert producer.dead_letter_reasons() == [], "dead-lettered at its first failure after the rejoin"
    assert handled == ["job-0"] and consumer.stored == [0]
    assert consumer.made == 2


def test_an_undecodable_message_is_dead_lettered_once_though_its_round_ended_before_it() -> None:
    # Messages are dead-lettered as the batch is decoded, before any is handled: the event before
    # it timed out, the round's settled prefix stopped before both, and the next round read the
    # undecodable one again and dead-lettered it again (once a round, for as long as it lasted).
    handled: list[str] = []
    calls = 0

    def slow_once(envelopes: Sequence[Envelope]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise statement_timeout()
        handled.extend(e.job_id for e in envelopes)

    again = [FakeMessage(0, event(0)), FakeMessage(1, b"not json"), FakeMessage(2, event(2))]
    consumer, producer = run([again, again], slow_once)

    assert producer.dead_letter_reasons() == ["undecodable"]
    assert [dict(h)["dlq.offset"] for _, _, h in producer.sent] == [b"1"]
    assert handled == ["job-0", "job-2"] and consumer.stored == [2]


class _Clock:
    """The round's clock, moved on by the handler: a try's length without waiting for it."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def test_a_batch_that_failed_after_the_round_was_over_is_tried_alone_next_round(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A slow database: the batch's statement outlasted `round_tries_s` (60 s), then failed on one
    # bad event. The round ended before the first try alone, nothing said to try them alone, and
    # the next round tried the whole batch again, and so on for good: no offset stored, the good
    # event never applied, no dead letter.
    clock, together, handled = _Clock(), list[list[str]](), list[str]()
    monkeypatch.setattr(consumer_round, "time", clock)

    def slow_batch_then_bad_event(envelopes: Sequence[Envelope]) -> None:
        jobs = [e.job_id for e in envelopes]
        if len(jobs) > 1:
            together.append(jobs)
            clock.now += 61
            raise ValueError("bad data in the batch")
        if jobs == ["job-1"]:
            raise ValueError("bad data")
        handled.extend(jobs)

    again = [FakeMessage(0, event(0)), FakeMessage(1, event(1))]
    consumer, producer = run([again, again], slow_batch_then_bad_event)

    assert together == [["job-0", "job-1"]], "the batch was tried together again"
    assert handled == ["job-0"] and consumer.stored == [1]
    assert producer.dead_letter_reasons() == ["handler-failed"]


def test_an_undecodable_message_is_dead_lettered_once_though_a_shutdown_ended_its_round_before_it(
        ) -> None:
    # SIGTERM while the event before it was retried in an outage: the settled prefix stopped
    # before that event, so the undecodable message lettered during decoding was not stored, and
    # the record of its letter died with the process: the next process dead-lettered it again.
    stop = threading.Event()

    def database_down(_envelopes: Sequence[Envelope]) -> None:
        stop.set()
        raise outage()

    again = [FakeMessage(0, event(0)), FakeMessage(1, b"not json")]
    first, producer = run([again], database_down, stop)
    handled: list[str] = []
    second, _ = run([again], lambda envelopes: handled.extend(e.job_id for e in envelopes),
                    producer=producer)  # the next process, from the last commit

    assert producer.dead_letter_reasons() == ["undecodable"], "dead-lettered by both processes"
    assert first.stored == [] and (handled, second.stored) == (["job-0"], [1])


def test_a_batch_stores_one_offset_a_partition_that_of_its_last_settled_message() -> None:
    # Stored message by message, every event consumed cost a librdkafka call (0.7 us; about
    # 300,000 a 50,000-lot job across the services). The last one moves the partition as far.
    messages = [FakeMessage(0, event(0)), FakeMessage(0, event(1), partition=1), FakeMessage(1, event(2)),
                FakeMessage(1, event(3), partition=1), FakeMessage(2, event(4))]
    consumer, _ = run([messages], lambda _envelopes: None)
    assert consumer.stored == [2, 1]
