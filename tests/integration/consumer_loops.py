"""The services' consumer loop (`run_consumer`) on threads, one per spec, for tests that drive it
on the real broker: stopped, and each thread given 30 s to leave its group, on exit."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from confluent_kafka import Consumer

from lotlens_common.kafka import ConsumerSpec, run_consumer
from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings, TopicSettings

MakeConsumer = Callable[[dict[str, str | int | float | bool]], Consumer]


@contextmanager
def consumer_loops(kafka: KafkaSettings, topics: TopicSettings, specs: Sequence[ConsumerSpec],
                   producer: EventProducer | None = None,
                   make_consumer: MakeConsumer = Consumer) -> Iterator[None]:
    """Each spec's loop, publishing with `producer` (or one of its own, named after its group)."""
    stop = threading.Event()
    loops = [threading.Thread(target=run_consumer, daemon=True, args=(
        kafka, topics, spec, producer or EventProducer(kafka, spec.group_id), stop, make_consumer))
        for spec in specs]
    for loop in loops:
        loop.start()
    try:
        yield
    finally:
        stop.set()
        for loop in loops:
            loop.join(30)
        # A loop left running would go on consuming (and taking locks) in the next tests.
        assert not any(loop.is_alive() for loop in loops), "a consumer loop did not stop in 30 s"
