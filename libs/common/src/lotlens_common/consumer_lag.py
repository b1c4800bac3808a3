"""Consumer lag per group and partition, for the partitions assigned to this consumer instance.

Each instance reports only its own assignment, so a group's lag is the sum over its instances and
nobody asks for anyone else's offsets. The figures come from a thread of their own with a client
of their own (same group id, never subscribed, so it does not join the group): librdkafka serves
its statistics callback only while the consumer polls, and a consumer stuck in a long handler or
retrying a database outage is exactly when lag matters.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import Gauge

log = logging.getLogger(__name__)

CONSUMER_LAG = Gauge("lotlens_kafka_consumer_lag_messages",
                     "Messages between the committed offset and the high watermark, per assigned partition",
                     ["group", "topic", "partition"])
ASSIGNED = Gauge("lotlens_kafka_consumer_assigned_partitions",
                 "Partitions assigned to this consumer instance", ["group"])


class LagMonitor:
    """Tracks the consumer's assignment (rebalance callbacks) and exports its lag every interval."""

    def __init__(self, client_config: Mapping[str, object], group: str, interval_s: float) -> None:
        self._config = {**client_config, "group.id": group, "enable.auto.commit": False}
        self._group = group
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._assigned: set[tuple[str, int]] = set()
        self._exported: set[tuple[str, int]] = set()

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """Partitions were added to this instance (an `on_assign` callback)."""
        with self._lock:
            self._assigned.update((p.topic, p.partition) for p in partitions)

    def revoked(self, partitions: list[TopicPartition]) -> None:
        """Partitions left this instance (`on_revoke` and `on_lost`)."""
        with self._lock:
            self._assigned.difference_update((p.topic, p.partition) for p in partitions)

    def run(self, stop: threading.Event) -> None:
        """Refresh the gauges until `stop`; a failed round is logged and the next one retried."""
        reader = Consumer(self._config)
        try:
            while not stop.wait(self._interval_s):
                try:
                    self._refresh(reader)
                except KafkaException as exc:
                    log.warning("consumer lag of %s not refreshed: %s", self._group, exc)
        finally:
            reader.close()
            for topic, partition in self._exported:
                CONSUMER_LAG.remove(self._group, topic, str(partition))
            ASSIGNED.remove(self._group)

    def _refresh(self, reader: Consumer) -> None:
        with self._lock:
            mine = sorted(self._assigned)
        current: dict[tuple[str, int], int] = {}
        if mine:
            committed = reader.committed([TopicPartition(t, p) for t, p in mine], timeout=10)
            for tp in committed:
                low, high = reader.get_watermark_offsets(tp, timeout=10, cached=False)
                # No committed offset yet: everything still on the partition is to be read.
                current[(tp.topic, tp.partition)] = max(high - (tp.offset if tp.offset >= 0 else low), 0)
        for topic, partition in self._exported - current.keys():
            CONSUMER_LAG.remove(self._group, topic, str(partition))
        for (topic, partition), lag in current.items():
            CONSUMER_LAG.labels(group=self._group, topic=topic, partition=str(partition)).set(lag)
        self._exported = set(current)
        ASSIGNED.labels(group=self._group).set(len(current))
