"""Partitions of a consumer group's topics that no member is assigned, and the rejoin that ends it.

A static member restarted under its instance id gets back, without a rebalance, the assignment its
previous process was left with. When that process died between the two rounds of a cooperative
rebalance (after giving partitions up, before joining again to hand them over), the partitions it
gave up belong to nobody and stay unread until something else rebalances the group: seen in CI, a
job stayed `translating` for good. librdkafka has no call that asks for a rebalance, and a
subscribe to the same topics sends nothing. So each instance looks at its group from its lag
thread: partitions unowned for `after_s` while the group is stable make it unsubscribe and
subscribe again. That rebalances the group: a member that held partitions joins again with none
(its changed metadata makes the broker rebalance), one that held none leaves and joins.

A slow member's second round leaves partitions unowned for a while too: its revoke waits for its
next `consume`, which a round reaches within 60 s (`round_tries_s`) unless its last try runs a
whole statement timeout. A rejoin meanwhile loses nothing; the rebalance it starts waits for that
member too, so the rejoining instance's own partitions pause until then. The gateway counts the
same partitions for `/metrics` (`lotlens_kafka_group_unassigned_partitions`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Protocol

from confluent_kafka import ConsumerGroupState, KafkaException

log = logging.getLogger(__name__)

Partition = tuple[str, int]
LOOK_TIMEOUT_S = 10.0


def unowned(description: Any, topics: Collection[str], partitions: Iterable[Partition]) -> set[Partition]:
    """The `partitions` of `topics` that no member of the described group (a `describe_consumer_
    groups` answer) is assigned; none while it is not stable, when partitions are unassigned on
    their way to a member."""
    if description.state != ConsumerGroupState.STABLE:
        return set()
    owned = {(tp.topic, tp.partition) for member in description.members or []
             for tp in member.assignment.topic_partitions or []}
    return {partition for partition in partitions if partition[0] in topics and partition not in owned}


class GroupAdmin(Protocol):
    """The `confluent_kafka.admin.AdminClient` calls a look makes."""

    def describe_consumer_groups(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Futures of group descriptions."""

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        """The cluster's metadata: its topics and their partitions."""


class UnownedWatch:
    """Looks at the group's assignment; sets `rejoin` once partitions stayed unowned `after_s`,
    and clears it again once they are not (another instance's rejoin, or a rebalance, came first)."""

    def __init__(self, group: str, topics: Sequence[str], after_s: float,
                 new_admin: Callable[[], GroupAdmin], clock: Callable[[], float] = time.monotonic) -> None:
        self._group, self._topics, self._after_s, self._clock = group, tuple(topics), after_s, clock
        self._new_admin = new_admin
        self._admin: GroupAdmin | None = None
        self._since: dict[Partition, float] = {}  # each unowned partition: first seen unowned
        self.rejoin = threading.Event()

    def look(self) -> None:
        """One look at the group; one the broker does not answer starts the count over, with a
        new admin client: after a broker restart the old one's describes timed out for good (in
        chaos runs, each look for minutes), and with those requests pending a second restart
        aborted the process in librdkafka (`rd_kafka_enq_once_del_source_return`)."""
        admin = self._admin = self._admin or self._new_admin()
        try:
            described = admin.describe_consumer_groups(
                [self._group], request_timeout=LOOK_TIMEOUT_S)[self._group].result(timeout=LOOK_TIMEOUT_S)
            listed = admin.list_topics(timeout=LOOK_TIMEOUT_S).topics
        except (KafkaException, TimeoutError) as exc:  # its futures time out with no text
            log.warning("assignment of %s not read: %r", self._group, exc)
            self._admin = None
            self._since.clear()
            return
        every = ((topic, partition) for topic in self._topics if topic in listed
                 for partition in listed[topic].partitions)
        now = self._clock()
        self._since = {p: self._since.get(p, now) for p in unowned(described, self._topics, every)}
        if not self._since:
            self.rejoin.clear()
        elif now - min(self._since.values()) >= self._after_s:
            log.warning("%s: %d partitions assigned to no member for %.0f s (%s); joining again",
                        self._group, len(self._since), self._after_s,
                        ", ".join(f"{t}[{p}]" for t, p in sorted(self._since)))
            self._since.clear()
            self.rejoin.set()
