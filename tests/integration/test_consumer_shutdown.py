"""The consumer loop on the real broker, stopped (SIGTERM) while it waits out a database outage:
what the next process reads again, and that nothing is dead-lettered twice."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import create_engine, text

from lotlens_common.envelope import Envelope
from lotlens_common.kafka import ConsumerSpec, run_consumer
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from tests.conftest import new_id
from tests.events import committed
from tests.integration.dead_letter_support import cancelled
from tests.polling import wait_for
from tests.servers import free_port

pytestmark = pytest.mark.integration


def _run(settings: ServiceSettings, group: str, handler: Callable[[Sequence[Envelope]], None],
         stop: threading.Event) -> threading.Thread:
    spec = ConsumerSpec(group_id=group, topics=[settings.topics.submissions], handler=handler)
    loop = threading.Thread(target=run_consumer, daemon=True, args=(
        settings.kafka, settings.topics, spec, EventProducer(settings.kafka, group), stop))
    loop.start()
    return loop


def _letters_sent(settings: ServiceSettings) -> int:
    topic, reader = settings.topics.dead_letter, Consumer({
        "bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": new_id()})
    try:
        return sum(reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in range(settings.topics.partitions))
    finally:
        reader.close()


def test_an_undecodable_message_behind_an_event_retried_at_shutdown_is_dead_lettered_once(
        settings: ServiceSettings) -> None:
    # The undecodable message was dead-lettered as the batch was decoded; SIGTERM came while the
    # event before it was retried in the outage, so neither offset was stored, the process's record
    # of the letter died with it, and the next process dead-lettered the message again.
    group, job = new_id("result-store-"), new_id("job-")
    publisher = EventProducer(settings.kafka, "test")
    for value in (cancelled(job), b"{not json"):  # one key: one partition, one batch, in order
        publisher.publish_raw(settings.topics.submissions, b"one-lot", value, [])
    publisher.flush()
    database_down = create_engine(f"postgresql+psycopg2://lotlens@127.0.0.1:{free_port()}/lotlens")
    stop, tried = threading.Event(), list[str]()

    def handle_in_outage(envelopes: Sequence[Envelope]) -> None:
        tried.extend(e.job_id for e in envelopes)
        stop.set()  # SIGTERM
        with database_down.connect() as conn:  # connection refused: an outage, retried
            conn.execute(text("SELECT 1"))

    _run(settings, group, handle_in_outage, stop).join(30)
    assert tried == [job] and committed(settings.kafka.bootstrap_servers, group,
                                        settings.topics.submissions, settings.topics.partitions) == 0

    handled: list[str] = []
    stop = threading.Event()
    loop = _run(settings, group, lambda envelopes: handled.extend(e.job_id for e in envelopes), stop)
    try:
        wait_for(lambda: handled == [job], "the event, by the next process", timeout_s=30)
        wait_for(lambda: committed(settings.kafka.bootstrap_servers, group, settings.topics.submissions,
                                   settings.topics.partitions) == 2, "both offsets committed", timeout_s=30,
                 every_s=0.2)
    finally:
        stop.set()
        loop.join(30)
    assert _letters_sent(settings) == 1, "the undecodable message was dead-lettered by both processes"
