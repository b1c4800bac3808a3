"""The gateway's reading of the consumer groups: partitions a stable group leaves to no member are
counted, and a reading the broker does not answer says why."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition

from lotlens_gateway.group_lag import GroupLagCollector
from tests.unit.admin_fakes import InProcess

GROUP, TOPIC, OTHER_TOPIC = "lotlens-vision-batcher", "lotlens.submissions", "lotlens.vision"
OTHER_GROUP = "lotlens-translator"


def answered(value: Any) -> Future[Any]:
    """A future the broker has already answered."""
    future: Future[Any] = Future()
    future.set_result(value)
    return future


def member(*partitions: tuple[str, int]) -> SimpleNamespace:
    """A group member as `describe_consumer_groups` gives it, assigned `partitions`."""
    return SimpleNamespace(assignment=SimpleNamespace(
        topic_partitions=[TopicPartition(topic, partition) for topic, partition in partitions]))


class DescribedBroker:
    """An admin client answering with one group's state and members, 3 partitions a topic, every
    log empty and nothing committed."""

    def __init__(self, state: ConsumerGroupState, *members: SimpleNamespace) -> None:
        self.described = SimpleNamespace(state=state, members=list(members))

    def describe_consumer_groups(self, groups: list[str], **kwargs: Any) -> dict[str, Any]:
        return {group: answered(self.described) for group in groups}

    def list_consumer_group_offsets(self, requests: list[ConsumerGroupTopicPartitions],
                                    **kwargs: Any) -> dict[str, Any]:
        return {request.group_id: answered(ConsumerGroupTopicPartitions(request.group_id, []))
                for request in requests}

    def list_offsets(self, partitions: dict[TopicPartition, Any], **kwargs: Any) -> dict[Any, Any]:
        return {tp: answered(SimpleNamespace(offset=0)) for tp in partitions}

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        three = SimpleNamespace(partitions=dict.fromkeys(range(3)))
        return SimpleNamespace(topics={TOPIC: three, OTHER_TOPIC: three})


def unassigned(broker: DescribedBroker, groups: Mapping[str, tuple[str, ...]] | None = None
               ) -> dict[tuple[str, ...], float]:
    """`lotlens_kafka_group_unassigned_partitions` as one reading of `broker` reports it, watching
    `groups` (GROUP on TOPIC by default)."""
    collector = GroupLagCollector(InProcess(lambda: broker), groups or {GROUP: (TOPIC,)}, cache_s=0.0)
    families = {family.name: family for family in collector.collect()}
    return {tuple(sample.labels.values()): sample.value
            for sample in families["lotlens_kafka_group_unassigned_partitions"].samples}


def test_a_stable_group_counts_the_partitions_of_its_topics_no_member_is_assigned() -> None:
    # A static member restarted between the two rounds of a cooperative rebalance got back what its
    # old process kept; the partition it gave up was nobody's, unread for good, and showed only as
    # lag (30 lots stuck never reached the lag alerts' 100 messages).
    broker = DescribedBroker(ConsumerGroupState.STABLE, member((TOPIC, 0), (OTHER_TOPIC, 1)),
                             member((TOPIC, 2)), member())
    # OTHER_TOPIC is read too (another group's) and is not GROUP's: 1 is TOPIC's partition 1. (Both
    # groups are described alike here: OTHER_GROUP misses OTHER_TOPIC's partitions 0 and 2.)
    assert unassigned(broker, {GROUP: (TOPIC,), OTHER_GROUP: (OTHER_TOPIC,)}) == {
        (GROUP,): 1, (OTHER_GROUP,): 2}


def test_a_group_rebalancing_or_without_members_has_none_unassigned() -> None:
    # A rebalance hands partitions out, and LotLensConsumerGroupAbsent covers a group with no member.
    for state in (ConsumerGroupState.PREPARING_REBALANCING, ConsumerGroupState.COMPLETING_REBALANCING):
        assert unassigned(DescribedBroker(state, member((TOPIC, 0)))) == {(GROUP,): 0}, state
    assert unassigned(DescribedBroker(ConsumerGroupState.EMPTY)) == {(GROUP,): 0}
    every = member((TOPIC, 0), (TOPIC, 1), (TOPIC, 2))
    assert unassigned(DescribedBroker(ConsumerGroupState.STABLE, every)) == {(GROUP,): 0}


class SilentBroker:
    """An admin client whose every answer times out (the future's TimeoutError carries no text)."""

    def describe_consumer_groups(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise FutureTimeout()

    def list_consumer_group_offsets(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise FutureTimeout()

    def list_offsets(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        raise FutureTimeout()

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        raise FutureTimeout()


def test_a_reading_that_timed_out_is_logged_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    # The line read "consumer group lag not read: " and nothing more: str() of a TimeoutError is empty.
    collector = GroupLagCollector(InProcess(SilentBroker), {"lotlens-translator": ()}, cache_s=0.0)
    with caplog.at_level(logging.WARNING, logger="lotlens_gateway.group_lag"):
        assert collector.groups() is None
    [line] = [record.getMessage() for record in caplog.records]
    assert line.startswith("consumer group lag not read: ") and "TimeoutError" in line, line


class HangingBroker(SilentBroker):
    """A broker that takes `hold` (an Event) to answer, then times out: Kafka down, as a scrape sees it."""

    def __init__(self) -> None:
        self.hold = threading.Event()

    def describe_consumer_groups(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.hold.wait(30)
        raise FutureTimeout()


def test_a_scrape_does_not_wait_for_a_broker_that_does_not_answer() -> None:
    # Read within the scrape, a broker that did not answer held the gateway's /metrics past an
    # HTTP client's 5 s timeout: every gateway figure was lost, the outbox backlog included, just
    # while Kafka was down (tests/integration/test_gateway_outbox.py failed on it).
    broker = HangingBroker()
    collector = GroupLagCollector(InProcess(lambda: broker), {"lotlens-translator": ()}, scrape_wait_s=0.2)
    started = time.monotonic()
    families = {family.name: family for family in collector.collect()}
    assert time.monotonic() - started < 5.0  # the scrape's own bound is 0.2 s; generous for load
    assert [sample.value for sample in families["lotlens_kafka_group_lag_read"].samples] == [0]
    assert families["lotlens_kafka_group_members"].samples == []
    broker.hold.set()  # the reading on its own thread ends (here: refused)
