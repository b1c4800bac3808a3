"""The consumer loop on the real broker and database when statements are cancelled by
`statement_timeout` many times over: several slow events in one batch, and a database stalled for
longer than one try (a brownout). Each try that times out costs a whole statement_timeout, so the
loop must go back to `consume` after each one: a member away longer than `max.poll.interval.ms`
is put out of the group, its stored offsets are never committed, and the next owner of the
partition starts over (the same events dead-lettered again, round after round)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.engine import Engine

from lotlens_admin.letters import read_letters
from lotlens_common.envelope import Envelope
from lotlens_common.kafka import ConsumerSpec
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from tests.conftest import new_id
from tests.events import committed as committed_on
from tests.integration.consumer_loops import consumer_loops
from tests.integration.dead_letter_support import cancelled
from tests.polling import wait_for

pytestmark = pytest.mark.integration

# The workers' limits, scaled down: a statement over 2 s is cancelled (SQLSTATE 57014), and a
# member away from `consume` for 6 s is put out of the group: the batch's try and two lone tries
# that time out do not fit (the broker takes no session under 6 s, nor librdkafka a poll interval
# under the session).
STATEMENT_TIMEOUT = "2s"
ROUND_TRIES_S = 0.4  # the loop's `round_tries_s`, scaled the same way (60 s for 300 s)
POLL_CONFIG = {"max.poll.interval.ms": 6000, "session.timeout.ms": 6000}


def slow_handler(engine: Engine, slow: Callable[[Envelope], bool],
                 handled: list[str]) -> Callable[[Sequence[Envelope]], None]:
    """A handler whose statement sleeps past the statement timeout when any event is `slow`."""
    def handle(envelopes: Sequence[Envelope]) -> None:
        sleep_s = 30 if any([slow(e) for e in envelopes]) else 0  # every event asked: a list
        with engine.begin() as conn:
            conn.execute(text(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"))
            conn.execute(text("SELECT pg_sleep(:s)"), {"s": sleep_s})
        handled.extend(e.job_id for e in envelopes)
    return handle


@contextmanager
def consuming(settings: ServiceSettings, group: str,
              handler: Callable[[Sequence[Envelope]], None]) -> Iterator[None]:
    """The services' loop for `group` on the submissions topic, with the scaled poll interval."""
    spec = ConsumerSpec(group_id=group, topics=[settings.topics.submissions], handler=handler,
                        round_tries_s=ROUND_TRIES_S)
    with consumer_loops(settings.kafka, settings.topics, [spec],
                        make_consumer=lambda config: Consumer({**config, **POLL_CONFIG})):
        yield


def publish(settings: ServiceSettings, jobs: Sequence[str]) -> None:
    publisher = EventProducer(settings.kafka, "test")
    for job in jobs:  # one key: one partition, in this order, one consume's batch
        publisher.publish_raw(settings.topics.submissions, b"one-lot", cancelled(job),
                              [("type", b"JobCancelled")])
    publisher.flush()


def committed(settings: ServiceSettings, group: str) -> int:
    """Offsets the group has committed on the submissions topic."""
    return committed_on(settings.kafka.bootstrap_servers, group, settings.topics.submissions,
                        settings.topics.partitions)


def dead_lettered(settings: ServiceSettings) -> tuple[list[str], int]:
    """The job ids dead-lettered (a message sent more than once listed once, as `dlq list` does)
    and how many letters were sent in all (the topic is this test's own)."""
    topic = settings.topics.dead_letter
    jobs = [orjson.loads(letter.value or b"{}")["job_id"]
            for letter in read_letters(settings.kafka, topic).letters]
    reader = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": new_id()})
    try:
        sent = sum(reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in range(settings.topics.partitions))
    finally:
        reader.close()
    return sorted(jobs), sent


def test_slow_events_of_one_batch_are_dead_lettered_once_each_without_leaving_the_group(
        settings: ServiceSettings, engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lotlens_common.kafka")
    slow = [new_id("slow-") for _ in range(3)]
    good, middle, later = new_id("good-"), new_id("middle-"), new_id("later-")
    jobs = [good, slow[0], middle, slow[1], slow[2], later]
    group = new_id("result-store-")
    handled: list[str] = []
    publish(settings, jobs)

    with consuming(settings, group, slow_handler(engine, lambda e: e.job_id in slow, handled)):
        wait_for(lambda: later in handled, "the events behind the slow ones", timeout_s=90)
        # Stored offsets reach the broker within a second (auto-commit) unless the member was
        # put out of the group meanwhile: then they never do and the partition is read again.
        wait_for(lambda: committed(settings, group) == len(jobs), "the offsets committed", timeout_s=30,
                 every_s=0.2)

    assert dead_lettered(settings) == (sorted(slow), len(slow)), "each slow event, once"
    assert [job for job in handled if job not in slow] == [good, middle, later]
    assignments = [r.getMessage() for r in caplog.records if "partitions assigned" in r.getMessage()]
    assert len(assignments) == 1, f"the member left the group and joined again: {assignments}"


def test_an_event_slow_only_while_the_database_stalls_is_handled_not_dead_lettered(
        settings: ServiceSettings, engine: Engine) -> None:
    # A storage stall longer than a statement_timeout: the batch's try and the event's first try
    # alone are cancelled, the next try passes. It is no slow query: no dead letter.
    stalled, later = new_id("stalled-"), new_id("later-")
    group = new_id("result-store-")
    handled: list[str] = []
    tries: list[str] = []

    def slow(envelope: Envelope) -> bool:
        if envelope.job_id != stalled:
            return False
        tries.append(envelope.job_id)
        return len(tries) <= 2  # the stall is over from the third try on

    publish(settings, [stalled, later])
    with consuming(settings, group, slow_handler(engine, slow, handled)):
        wait_for(lambda: stalled in handled and later in handled, "both events handled", timeout_s=30)
        wait_for(lambda: committed(settings, group) == 2, "the offsets committed", timeout_s=30, every_s=0.2)
    assert dead_lettered(settings) == ([], 0)


def test_a_slow_database_whose_events_pass_alone_ends_rounds_in_time_without_leaving_the_group(
        settings: ServiceSettings, engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    # The batch times out as a whole (no one slow event: a slow database), so each of its events is
    # then tried alone, each passing in 0.9 s; one of them always times out. Ten such tries and the
    # timed-out one took 11 s in one round, past the 6 s poll interval: the member left the group
    # and the next round began again from the last commit, round after round.
    caplog.set_level(logging.INFO, logger="lotlens_common.kafka")
    crawling, stuck, later = [new_id("crawl-") for _ in range(10)], new_id("stuck-"), new_id("later-")
    group = new_id("result-store-")
    handled: list[str] = []

    def handle(envelopes: Sequence[Envelope]) -> None:
        jobs = [e.job_id for e in envelopes]
        # Together, or the stuck one: past the statement timeout; alone, 0.9 s (within it).
        sleep_s = 30 if len(jobs) > 1 or stuck in jobs else 0.9 if jobs[0] in crawling else 0
        with engine.begin() as conn:
            conn.execute(text(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"))
            conn.execute(text("SELECT pg_sleep(:s)"), {"s": sleep_s})
        handled.extend(e.job_id for e in envelopes)

    publish(settings, [*crawling, stuck])
    with consuming(settings, group, handle):
        wait_for(lambda: set(crawling) <= set(handled), "the events that pass alone", timeout_s=90)
        publish(settings, [later])
        wait_for(lambda: later in handled, "the event published after them", timeout_s=60)
        wait_for(lambda: committed(settings, group) == len(crawling) + 2, "the offsets committed",
                 timeout_s=30, every_s=0.2)

    assert dead_lettered(settings) == ([stuck], 1), "the event that always times out, once"
    assignments = [r.getMessage() for r in caplog.records if "partitions assigned" in r.getMessage()]
    assert len(assignments) == 1, f"the member left the group and joined again: {assignments}"


def test_a_batch_that_fails_after_a_slow_statement_is_tried_alone_and_its_bad_event_dead_lettered(
        settings: ServiceSettings, engine: Engine) -> None:
    # A slow database: the batch's statement outlasts the round's time for tries, then fails on a
    # bad event (a data error, no timeout). Its events were never marked to be tried alone, so the
    # round ended before the first try alone and the next round tried the whole batch again, for
    # good: the good event never applied, the offset never moved, nothing dead-lettered.
    good, bad = new_id("good-"), new_id("bad-")
    group = new_id("result-store-")
    handled: list[str] = []

    def handle(envelopes: Sequence[Envelope]) -> None:
        jobs = [e.job_id for e in envelopes]
        with engine.begin() as conn:
            if len(jobs) > 1:  # slower than ROUND_TRIES_S, within the statement timeout
                conn.execute(text("SELECT pg_sleep(:s)"), {"s": ROUND_TRIES_S * 2})
            if bad in jobs:
                conn.execute(text("SELECT 1 / 0"))
        handled.extend(jobs)

    publish(settings, [good, bad])
    with consuming(settings, group, handle):
        wait_for(lambda: good in handled, "the good event, alone", timeout_s=30)
        wait_for(lambda: committed(settings, group) == 2, "the offsets committed", timeout_s=30, every_s=0.2)
    assert dead_lettered(settings) == ([bad], 1), "the bad event, once"
