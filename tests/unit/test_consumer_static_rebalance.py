"""A static member asks for one rebalance after each join, once the join has given it partitions:
the assignment a restarted process gets back without a rebalance may leave partitions its old
process gave up to nobody (tests/integration/test_consumer_static_rejoin.py shows it on a broker).
Driven with a fake consumer whose `consume` serves assignments as librdkafka's callbacks would."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import TopicPartition

from lotlens_common.kafka import ConsumerSpec, run_consumer
from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings
from tests.unit.consumer_fakes import TOPICS, FakeConsumer, FakeMessage, FakeProducer, FencedMessage

Step = list[TopicPartition] | list[FakeMessage]  # an assignment served, or a batch handed out


class Assigning(FakeConsumer):
    """Serves each step in turn: an assignment through the `on_assign` callback subscribed with,
    or a batch; records the calls that join or leave."""

    def __init__(self, steps: list[Step], stop: threading.Event) -> None:
        super().__init__([], stop)
        self.steps = steps
        self.calls: list[str] = []
        self.on_assign: Callable[[Any, list[TopicPartition]], None] | None = None

    def subscribe(self, _topics: list[str], on_assign: Any = None, on_revoke: object = None,
                  on_lost: object = None) -> None:
        self.calls.append("subscribe")
        self.on_assign = on_assign

    def unsubscribe(self) -> None:
        self.calls.append("unsubscribe")

    def consume(self, _n: int, _timeout: float) -> list[FakeMessage]:
        if not self.steps:
            self.stop.set()
            return []
        step = self.steps.pop(0)
        if step and isinstance(step[0], TopicPartition):
            assert self.on_assign is not None
            self.on_assign(self, step)
            return []
        return cast(list[FakeMessage], step)


class StoppedAsItFails(Assigning):
    """Stopped (SIGTERM) just as its client fails for good: while the loop waits to join again."""

    def consume(self, n: int, timeout: float) -> list[FakeMessage]:
        batch = super().consume(n, timeout)
        if batch and isinstance(batch[0], FencedMessage):
            self.stop.set()
        return batch


def run(steps: list[Step], instance: str | None, consumer_type: type[Assigning] = Assigning) -> list[str]:
    stop = threading.Event()
    consumer = consumer_type(steps, stop)
    spec = ConsumerSpec(group_id="g", topics=[TOPICS.submissions], handler=lambda envelopes: None)
    run_consumer(KafkaSettings(group_instance_id=instance), TOPICS, spec,
                 cast(EventProducer, FakeProducer()), stop, make_consumer=consumer)  # type: ignore[arg-type]
    return consumer.calls


def partitions(*numbers: int) -> list[TopicPartition]:
    return [TopicPartition(TOPICS.submissions, n) for n in numbers]


def test_a_static_member_rejoins_once_after_its_first_assignment_with_partitions() -> None:
    # The first round of a rebalance may give none: only the first assignment with partitions
    # asks (an empty one's unsubscribe would leave the group, and a new member's first round is
    # always empty). The rejoin's own assignment asks nothing more.
    calls = run([partitions(), partitions(0, 1), [], partitions(2), partitions(0)], "vision-batcher-1")
    assert calls == ["subscribe", "unsubscribe", "subscribe"]


def test_a_dynamic_member_never_asks_its_join_is_a_rebalance_already() -> None:
    assert run([partitions(0, 1), partitions(2)], None) == ["subscribe"]


def test_a_client_replaced_after_failing_for_good_asks_again_after_its_join() -> None:
    # Its join under the same instance id is a static member's restart as the broker sees it.
    fenced: list[FakeMessage] = [FencedMessage()]
    calls = run([partitions(0), fenced, partitions(0, 1)], "vision-batcher-1")
    assert calls == ["subscribe", "unsubscribe", "subscribe", "subscribe", "unsubscribe", "subscribe"]


def test_a_member_stopped_as_its_client_fails_does_not_join_again() -> None:
    # A new member would be closed at once, and its join would cost the group a rebalance.
    fenced: list[FakeMessage] = [FencedMessage()]
    calls = run([partitions(0), fenced, partitions(0, 1)], "vision-batcher-1", StoppedAsItFails)
    assert calls == ["subscribe", "unsubscribe", "subscribe"]
