"""Every LotLens consumer group's lag and member count, read from the broker for `/metrics`.

Each consumer instance exports the lag of the partitions assigned to it (`lotlens_common.
consumer_lag`): a group none of whose instances runs exported nothing, just when its lag grows,
and the alerts on lag saw no series at all. The gateway runs whatever the stages do, so its
operations port reports every group it watches (`consumer_groups`, with the deployment's
`KAFKA_GROUP_PREFIX`, each with the topics it subscribes to): the group's committed offsets against
the topics' end offsets, summed per topic, and its members. A partition the group never committed
on lags by all of its log, from the earliest offset the broker keeps to the end: that is what its
consumers read first (`auto.offset.reset=earliest`), and what the KEDA scalers count for it
(`offsetResetPolicy: earliest`). And the partitions of a stable group's topics that no member is
assigned: a static member restarted between the two rounds of a cooperative rebalance gets back
what its old process kept, and the partitions given up in the first round stay unread (the
restarted consumer asks for a rebalance once it has its partitions back, in
`lotlens_common.kafka`; this shows whether anything else left them). As lag alone, 30 stuck
lots never reached the lag alerts. Read when a scrape finds the last reading over `cache_s` old,
on a thread of its own (`latest`); a broker that does not answer leaves the series out (logged)
rather than reporting stale figures, and `lotlens_kafka_group_lag_read` says so (0): without it
the alerts on lag and members just went quiet, with no series left to judge
(LotLensConsumerLagUnread watches it, and its absence). The admin calls run in a child process
of their own (`admin_process.py`): librdkafka can kill the process making them as a broker stops
(confluentinc/librdkafka#4605 and a segfault reading committed offsets), which ended the gateway
and now costs one reading; the consumers make none.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lotlens_gateway.admin_process import AdminCalls

log = logging.getLogger(__name__)

Partition = tuple[str, int]  # topic, partition


class OffsetsAdmin(Protocol):
    """The `confluent_kafka.admin.AdminClient` calls this module makes."""

    def describe_consumer_groups(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Futures of group descriptions."""

    def list_consumer_group_offsets(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Futures of a group's committed offsets."""

    def list_offsets(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        """Futures of partitions' offsets."""

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        """The cluster's metadata: its topics and their partitions."""


@dataclass(frozen=True)
class GroupLag:
    """One group as the broker sees it: members, messages behind per topic, and the partitions of
    its topics no member is assigned while it is stable."""

    members: int
    behind: dict[str, int] = field(default_factory=dict)
    unassigned: int = 0


class GroupLagCollector(Collector):
    """`lotlens_kafka_group_lag_messages{group,topic}`, `lotlens_kafka_group_members{group}`,
    `lotlens_kafka_group_unassigned_partitions{group}` and `lotlens_kafka_group_lag_read` (1 when
    the broker answered, else 0)."""

    def __init__(self, admin: AdminCalls, groups: Mapping[str, Collection[str]], group_prefix: str = "",
                 cache_s: float = 10.0, timeout_s: float = 5.0, scrape_wait_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._admin = admin
        self._fresh = False  # after a failed reading the next one asks with a new admin client
        # Each group with the topics it subscribes to: a topic it never committed on lags too.
        self._groups = {group_prefix + name: tuple(topics) for name, topics in groups.items()}
        self._cache_s, self._timeout_s, self._clock = cache_s, timeout_s, clock
        self._scrape_wait_s = scrape_wait_s
        self._lock = threading.Lock()  # one reading at a time
        self._starting = threading.Lock()
        self._reading: threading.Thread | None = None
        self._cached: tuple[float, dict[str, GroupLag] | None] | None = None

    def collect(self) -> Iterator[Metric]:
        """The figures, read at most every `cache_s` (none while the broker does not answer)."""
        lag = GaugeMetricFamily("lotlens_kafka_group_lag_messages",
                                "Messages between a consumer group's committed offsets (the earliest "
                                "offset where it never committed) and the end of each topic it "
                                "consumes, whether or not any of its instances runs",
                                labels=["group", "topic"])
        members = GaugeMetricFamily("lotlens_kafka_group_members", "Members of a consumer group",
                                    labels=["group"])
        unassigned = GaugeMetricFamily("lotlens_kafka_group_unassigned_partitions",
                                       "Partitions of the topics a consumer group subscribes to that no "
                                       "member is assigned while the group is stable (0 while it "
                                       "rebalances or has no member): nobody reads them",
                                       labels=["group"])
        read = GaugeMetricFamily("lotlens_kafka_group_lag_read",
                                 "1 when the broker answered the last reading of the consumer groups' "
                                 "lag and members, 0 when it did not (their series are left out then)")
        found = self.latest()
        read.add_metric([], 0 if found is None else 1)
        for group, state in (found or {}).items():
            members.add_metric([group], state.members)
            unassigned.add_metric([group], state.unassigned)
            for topic, behind in sorted(state.behind.items()):
                lag.add_metric([group, topic], behind)
        yield lag
        yield members
        yield unassigned
        yield read

    def latest(self) -> dict[str, GroupLag] | None:
        """The figures for a scrape, which never waits on the broker for long: a reading that is
        due runs on a thread of its own and is waited for at most `scrape_wait_s`; meanwhile the
        last reading stands while it is recent, else there are none. Read within the scrape, a
        broker that did not answer held `/metrics` past its timeout (5 s and more): every gateway
        figure was lost, the outbox backlog included, just while Kafka was down."""
        with self._starting:
            cached = self._cached
            due = cached is None or self._clock() - cached[0] >= self._cache_s
            if due and (self._reading is None or not self._reading.is_alive()):
                self._reading = threading.Thread(target=self.groups, name="group-lag", daemon=True)
                self._reading.start()
            reading = self._reading
        if due and reading is not None:
            reading.join(self._scrape_wait_s)
        cached = self._cached
        if cached is None or self._clock() - cached[0] > 2 * (self._cache_s + self._timeout_s):
            return None
        return cached[1]

    def groups(self) -> dict[str, GroupLag] | None:
        """Every watched group's figures (None when the broker did not answer)."""
        with self._lock:
            if self._cached and self._clock() - self._cached[0] < self._cache_s:
                return self._cached[1]
            found: dict[str, GroupLag] | None
            try:
                found = self._admin.run(read_groups, self._groups, self._timeout_s, timeout_s=self._timeout_s,
                                        fresh=self._fresh)
            except Exception as exc:  # the broker's answer or its absence (or the child's): no figures
                # repr: a future's TimeoutError has no text, and the line said nothing after the colon.
                log.warning("consumer group lag not read: %r", exc)
                found = None
            self._fresh = found is None
            self._cached = (self._clock(), found)
            return found


def read_groups(admin: OffsetsAdmin, groups: Mapping[str, Collection[str]], timeout_s: float
                ) -> dict[str, GroupLag]:
    """Each group's figures, from `admin` (each group with the topics it subscribes to), within
    about `timeout_s`; run in the admin process."""
    deadline = time.monotonic() + timeout_s

    def left() -> float:
        return max(0.1, deadline - time.monotonic())

    described = admin.describe_consumer_groups(list(groups), request_timeout=timeout_s)
    # One group per request: the admin API lists one group's committed offsets at a time.
    committed_futures = {group: admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=timeout_s)[group] for group in groups}
    committed: dict[str, dict[Partition, int]] = {}
    for group, future in committed_futures.items():
        committed[group] = {(tp.topic, tp.partition): tp.offset
                            for tp in future.result(left()).topic_partitions or [] if tp.offset >= 0}
    consumed = {group: set(topics) | {topic for topic, _ in committed[group]}
                for group, topics in groups.items()}
    wanted = set().union(*consumed.values())
    listed = admin.list_topics(timeout=left()).topics
    partitions = sorted((topic, partition) for topic in wanted if topic in listed
                        for partition in listed[topic].partitions)
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    ends = _offsets(admin, partitions, latest, timeout_s, left)
    # A partition a group never committed on is read from the log's start (the consumers'
    # `auto.offset.reset=earliest`): all of it is behind. Skipped, a group stuck on its first
    # batch, or crash-looping from its start, showed no lag at all while its topics filled.
    uncommitted = [(topic, partition) for topic, partition in partitions
                   if any(topic in consumed[group] and (topic, partition) not in committed[group]
                          for group in groups)]
    earliest = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
    starts = _offsets(admin, uncommitted, earliest, timeout_s, left)
    result: dict[str, GroupLag] = {}
    for group in groups:
        behind: dict[str, int] = {}
        for topic, partition in partitions:
            if topic in consumed[group]:
                end = ends[(topic, partition)]
                start = committed[group].get((topic, partition), starts.get((topic, partition), end))
                behind[topic] = behind.get(topic, 0) + max(end - start, 0)
        description = described[group].result(left())
        result[group] = GroupLag(len(description.members or []), behind,
                                 _unassigned(description, groups[group], partitions))
    return result


def _unassigned(description: Any, topics: Collection[str], partitions: Sequence[Partition]) -> int:
    """The partitions of `topics` no member of the described group is assigned, counted only while
    it is stable: during a rebalance partitions are unassigned on their way to a member."""
    if description.state != ConsumerGroupState.STABLE:
        return 0
    owned = {(tp.topic, tp.partition) for member in description.members or []
             for tp in member.assignment.topic_partitions or []}
    return sum(1 for partition in partitions if partition[0] in topics and partition not in owned)


def _offsets(admin: OffsetsAdmin, partitions: Sequence[Partition], spec: Any, timeout_s: float,
             left: Callable[[], float]) -> dict[Partition, int]:
    """The offset `spec` (the log's start or end) of each partition."""
    if not partitions:
        return {}
    futures = admin.list_offsets({TopicPartition(topic, partition): spec for topic, partition in partitions},
                                 request_timeout=timeout_s)
    return {(tp.topic, tp.partition): future.result(left()).offset for tp, future in futures.items()}
