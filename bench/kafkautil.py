"""Kafka helpers: offsets before a run, one job's events after it, consumer lag, scratch topics."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable
from datetime import datetime

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.config import groups, kafka_bootstrap

Offsets = dict[tuple[str, int], int]


def _consumer(group: str | None = None) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": kafka_bootstrap(),
            "group.id": group or f"bench-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 52_428_800,
        }
    )


def end_offsets(topics: Iterable[str]) -> Offsets:
    """(topic, partition) -> high watermark, for every partition of the topics."""
    consumer = _consumer()
    try:
        found: Offsets = {}
        wanted = set(topics)
        metadata = consumer.list_topics(timeout=10)  # ensure_topics returns once they are served
        for topic in wanted:
            for partition in metadata.topics[topic].partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                found[(topic, partition)] = high
        return found
    finally:
        consumer.close()


def job_events(start: Offsets, job_id: str) -> list[tuple[str, datetime, int]]:
    """(type, occurred_at, bytes) of the job's events written since `start` (read to the end)."""
    stop = end_offsets({topic for topic, _ in start})
    todo = {key: offset for key, offset in start.items() if stop[key] > offset}
    consumer = _consumer()
    events: list[tuple[str, datetime, int]] = []
    needle = job_id.encode()
    try:
        consumer.assign(
            [TopicPartition(topic, partition, offset) for (topic, partition), offset in todo.items()]
        )
        while todo:
            for message in consumer.consume(5000, 1.0):
                key = (message.topic() or "", message.partition() or 0)
                if message.error() is None:
                    value = message.value() or b""
                    if message.key() == needle:
                        doc = orjson.loads(value)
                        events.append((doc["type"], datetime.fromisoformat(doc["occurred_at"]), len(value)))
                    if (message.offset() or 0) + 1 >= stop.get(key, 0):
                        todo.pop(key, None)
                elif message.error().code() == KafkaError._PARTITION_EOF:  # type: ignore[union-attr]
                    todo.pop(key, None)
    finally:
        consumer.close()
    return events


def lag() -> int:
    """Messages the stack's consumer groups have not committed yet (0: the stack is idle)."""
    wanted_groups = groups()
    ends = end_offsets({topic for topics in wanted_groups.values() for topic in topics})
    behind = 0
    for group, topics in wanted_groups.items():
        consumer = _consumer(group)
        try:
            wanted = [TopicPartition(t, p) for (t, p) in ends if t in topics]
            for tp in consumer.committed(wanted, timeout=10):
                committed = tp.offset if tp.offset >= 0 else 0
                behind += max(0, ends[(tp.topic, tp.partition)] - committed)
        finally:
            consumer.close()
    return behind


def create_topics(names: list[str], partitions: int = 6) -> None:
    """Create scratch topics (the floor's hops) and wait for them."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap()})
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
    )
    for future in futures.values():
        future.result(30)


def delete_topics(names: list[str]) -> None:
    """Delete scratch topics (best effort)."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap()})
    for future in admin.delete_topics(names).values():
        with contextlib.suppress(Exception):  # cleanup must not fail the bench
            future.result(30)
