"""When a consumer instance asks to leave its group and join again: partitions of its topics that
no member of the stable group is assigned, for `after_s` on end."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException, TopicPartition

from lotlens_common.consumer_unowned import UnownedWatch


class Group:
    """An admin client answering for one group: its state and each member's partitions."""

    def __init__(self, topics: dict[str, int]) -> None:
        self.topics = topics
        self.state = ConsumerGroupState.STABLE
        self.members: list[list[tuple[str, int]]] = []
        self.down = False

    def describe_consumer_groups(self, groups: list[str], **_: Any) -> dict[str, Any]:
        if self.down:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        members = [SimpleNamespace(assignment=SimpleNamespace(
            topic_partitions=[TopicPartition(t, p) for t, p in owned])) for owned in self.members]
        future: Future[Any] = Future()
        future.set_result(SimpleNamespace(state=self.state, members=members))
        return {groups[0]: future}

    def list_topics(self, **_: Any) -> Any:
        return SimpleNamespace(topics={t: SimpleNamespace(partitions=dict.fromkeys(range(n)))
                                       for t, n in self.topics.items()})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_partition_unowned_past_the_limit_asks_for_a_rejoin_once() -> None:
    group, clock = Group({"vision": 2, "submissions": 1}), Clock()
    group.members = [[("vision", 0), ("submissions", 0)], []]  # vision[1] is nobody's
    watch = UnownedWatch("g", ["vision", "submissions"], after_s=90, new_admin=lambda: group, clock=clock)
    watch.look()
    clock.now += 89
    watch.look()
    assert not watch.rejoin.is_set()
    clock.now += 1
    watch.look()
    assert watch.rejoin.is_set()
    watch.rejoin.clear()
    clock.now += 5
    watch.look()  # counted again from its last rejoin
    assert not watch.rejoin.is_set()


def test_a_rebalance_or_every_partition_owned_starts_the_count_again() -> None:
    group, clock = Group({"vision": 2}), Clock()
    watch = UnownedWatch("g", ["vision"], after_s=90, new_admin=lambda: group, clock=clock)
    group.members = [[("vision", 0)]]
    watch.look()
    clock.now += 60
    group.state = ConsumerGroupState.COMPLETING_REBALANCING  # the rebalance hands it out
    watch.look()
    group.state = ConsumerGroupState.STABLE
    clock.now += 60
    watch.look()
    group.members = [[("vision", 0), ("vision", 1)]]
    clock.now += 60
    watch.look()
    group.members = [[("vision", 0)]]
    clock.now += 60
    watch.look()
    assert not watch.rejoin.is_set()


def test_only_the_groups_own_topics_count_and_a_missing_topic_is_none() -> None:
    group, clock = Group({"vision": 1, "webhooks": 3}), Clock()
    group.members = [[("vision", 0)]]
    watch = UnownedWatch("g", ["vision", "translation"], after_s=1, new_admin=lambda: group, clock=clock)
    watch.look()
    clock.now += 10
    watch.look()
    assert not watch.rejoin.is_set()


def test_a_rejoin_not_made_yet_is_called_off_once_every_partition_has_a_member() -> None:
    # The main loop acts on it at its next `consume`, a round later: another instance's rejoin may
    # have handed the partitions out by then, and a rejoin would only pause this one's.
    group, clock = Group({"vision": 2}), Clock()
    group.members = [[("vision", 0)]]
    watch = UnownedWatch("g", ["vision"], after_s=90, new_admin=lambda: group, clock=clock)
    watch.look()
    clock.now += 90
    watch.look()
    assert watch.rejoin.is_set()
    group.members = [[("vision", 0)], [("vision", 1)]]
    watch.look()
    assert not watch.rejoin.is_set()


def test_a_look_the_broker_does_not_answer_starts_the_count_over_with_a_new_client() -> None:
    # Else the first look after an outage longer than the limit acted on one observation; and
    # after a broker restart an admin client's describes timed out for good.
    group, clock = Group({"vision": 2}), Clock()
    group.members = [[("vision", 0)]]
    made: list[Group] = []

    def new_admin() -> Group:
        made.append(group)
        return group

    watch = UnownedWatch("g", ["vision"], after_s=90, new_admin=new_admin, clock=clock)
    watch.look()
    clock.now += 100
    group.down = True
    watch.look()
    group.down = False
    watch.look()
    assert not watch.rejoin.is_set()
    assert len(made) == 2  # a new client after the failed look
    clock.now += 90
    watch.look()
    assert watch.rejoin.is_set()
