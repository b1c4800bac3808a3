"""The stage's publisher against a broker that acknowledges a chunk more slowly than a flush waits:
librdkafka's in-process mock cluster on 127.0.0.1, each failed try taken up again as the stage's
loop takes it up."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from lotlens_common.envelope import Envelope, caused
from lotlens_common.events import JobCancelled
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.stage.adapters.kafka import KafkaPublisher
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.ports import Caused
from lotlens_common.stage.runner import TICK_S
from tests.conftest import new_id
from tests.mock_kafka import MockKafkaSettings

TOPIC = "results"
# A flush waits 0.3 s here (30 s in a service), less than the stage's poll interval, as in a service.
STAGE = StageSettings(poll_interval_s=1.0)
# Far more than the ~6 tries the chunk takes, even on a loaded machine.
DEADLINE_S = 60.0


class CountingProducer(EventProducer):
    """Waits 0.3 s for acknowledgements, and counts how often Kafka acknowledged each event."""

    acknowledged: Counter[str]

    def publish(self, topic: str, envelope: Envelope, delivered: Callable[[], None] | None = None,
                failed: Callable[[bool], None] | None = None) -> None:
        def counted() -> None:
            self.acknowledged[envelope.event_id] += 1
            if delivered is not None:
                delivered()
        super().publish(topic, envelope, counted, failed)

    def flush(self, timeout_s: float = 0.3) -> None:
        super().flush(timeout_s)


def tries_until_published(publish: Callable[[], None], in_kafka: Callable[[], str]) -> int:
    """Try `publish` at each watch of the stage's loop until it succeeds; how many tries it took.

    A batch whose settlement failed to publish is watched, and settled, again at the next watch:
    a poll interval after the last one began, and a tick after the failure at the soonest (when
    the flush outlasted the interval). Never at once: the failed flush's discard purges
    asynchronously, and events published a moment later were purged too, failing the try.
    """
    tries, deadline = 0, time.monotonic() + DEADLINE_S
    while True:
        tries += 1
        started = time.monotonic()
        try:
            publish()
            return tries
        except PublishError:
            assert time.monotonic() < deadline, (
                f"the chunk never got through: {in_kafka()} in Kafka after {tries} tries")
        time.sleep(max(TICK_S, started + STAGE.poll_interval_s - time.monotonic()))


def test_a_chunk_a_slow_broker_takes_longer_than_a_flush_gets_through_its_head_sent_once() -> None:
    # Each failed flush dropped the chunk's tail and the next try sent the whole chunk again: its
    # head was written once more at every try, its tail never (a 5,000-event settlement on a
    # broker taking fewer than ~170 events a second).
    producer = CountingProducer(MockKafkaSettings(rtt_ms=100, batch_bytes=1000), new_id("stage-"))
    producer.acknowledged = Counter()
    producer.publish(TOPIC, Envelope(event=JobCancelled(job_id="warm", cancelled_at="2026-01-01T00:00:00Z"),
                                     client_id="c"))
    producer.flush(10)  # the topic made and the producer id taken before the chunk
    publisher = KafkaPublisher(producer, TOPIC)
    chunk: list[Caused] = [(f"lot-{i}", JobCancelled(job_id=f"job-{i}", cancelled_at="2026-01-01T00:00:00Z"))
                           for i in range(60)]
    ids = {envelope.event_id for envelope in (caused(event, "c", cause) for cause, event in chunk)}

    tries = tries_until_published(lambda: publisher.publish("c", chunk),
                                  lambda: f"{len(ids & producer.acknowledged.keys())} of {len(ids)}")

    assert tries > 1  # the broker was slower than one flush's wait
    assert set(producer.acknowledged) >= ids
    # Written again only what was still on its way when a flush gave up.
    assert max(producer.acknowledged[i] for i in ids) <= 2, producer.acknowledged.most_common(3)
