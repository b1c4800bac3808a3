"""The consumer loop on the real broker and database when a handler's statement is cancelled by
PostgreSQL's `statement_timeout`: the same statement times out again every time, so the loop
isolates the event whose statement is slow and dead-letters it, and the partition flows on."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from lotlens_admin.letters import read_letters
from lotlens_common.envelope import Envelope
from lotlens_common.kafka import ConsumerSpec
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from tests.conftest import new_id
from tests.integration.consumer_loops import consumer_loops
from tests.integration.dead_letter_support import cancelled
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def test_an_event_whose_statement_times_out_is_dead_lettered_and_the_partition_flows_on(
        settings: ServiceSettings, engine: Engine) -> None:
    slow, good, later = new_id("slow-"), new_id("good-"), new_id("later-")
    group = new_id("result-store-")
    handled: list[str] = []

    def handle(envelopes: Sequence[Envelope]) -> None:
        # The worker's limit, scaled down: a statement over it is cancelled (SQLSTATE 57014).
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL statement_timeout = '200ms'"))
            conn.execute(text("SELECT pg_sleep(:s)"),
                         {"s": 2 if any(e.job_id == slow for e in envelopes) else 0})
        handled.extend(e.job_id for e in envelopes)

    publisher = EventProducer(settings.kafka, "test")
    for job in (good, slow, later):  # one key: one partition, in this order
        publisher.publish_raw(settings.topics.submissions, b"one-lot", cancelled(job),
                              [("type", b"JobCancelled")])
    publisher.flush()

    spec = ConsumerSpec(group_id=group, topics=[settings.topics.submissions], handler=handle)
    with consumer_loops(settings.kafka, settings.topics, [spec]):
        wait_for(lambda: later in handled, "the event behind the slow one", timeout_s=60)
        letters = read_letters(settings.kafka, settings.topics.dead_letter).letters
    assert good in handled and slow not in handled
    assert [(letter.key, letter.group, letter.reason) for letter in letters] == [
        (b"one-lot", group, "handler-failed")]
    assert "statement timeout" in letters[0].error
