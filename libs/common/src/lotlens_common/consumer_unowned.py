"""Partitions of a consumer group's topics that no member is assigned, and the rejoin that ends it.

A static member restarted under its instance id gets back, without a rebalance, the assignment its
previous process was left with. When that process died between the two rounds of a cooperative
rebalance (after giving partitions up, before joining again to hand them over), the partitions it
gave up belong to nobody and stay unread until something else rebalances the group: seen in CI, a
job stayed `translating` for good. librdkafka has no call that asks for a rebalance, and a
subscribe to the same topics sends nothing. So each instance looks at its group from its lag
thread: partitions unowned for `after_s` while the group is stable make it leave and join again
(unsubscribe, subscribe), and that rebalance hands them out. A slow member's second round leaves
partitions unowned for a while too (its revoke waits for its next `consume`): `after_s` is well
past a consumer round, so a rejoin is rare and only costs a rebalance.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from confluent_kafka import ConsumerGroupState

log = logging.getLogger(__name__)

Partition = tuple[str, int]


class GroupAdmin(Protocol):
    """The `confluent_kafka.admin.AdminClient` calls a look makes."""

    def describe_consumer_groups(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Futures of group descriptions."""

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        """The cluster's metadata: its topics and their partitions."""


class UnownedWatch:
    """Looks at the group's assignment; sets `rejoin` once partitions stayed unowned `after_s`."""

    def __init__(self, group: str, topics: Sequence[str], after_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._group, self._topics, self._after_s, self._clock = group, tuple(topics), after_s, clock
        self._since: dict[Partition, float] = {}  # each unowned partition: first seen unowned
        self.rejoin = threading.Event()

    def look(self, admin: GroupAdmin) -> None:
        """One look at the group (a KafkaException when the broker does not answer)."""
        described = admin.describe_consumer_groups([self._group])[self._group].result(timeout=10)
        if described.state != ConsumerGroupState.STABLE:  # a rebalance is under way: it assigns
            self._since.clear()
            return
        owned = {(tp.topic, tp.partition) for member in described.members
                 for tp in member.assignment.topic_partitions}
        metadata = admin.list_topics(timeout=10)
        every = {(topic, partition) for topic in self._topics if topic in metadata.topics
                 for partition in metadata.topics[topic].partitions}
        now = self._clock()
        self._since = {partition: self._since.get(partition, now) for partition in every - owned}
        if self._since and now - min(self._since.values()) >= self._after_s:
            log.warning("%s: %d partitions assigned to no member for %.0f s (%s); leaving the group "
                        "and joining again", self._group, len(self._since), self._after_s,
                        ", ".join(f"{t}[{p}]" for t, p in sorted(self._since)))
            self._since.clear()
            self.rejoin.set()
