"""The pipeline's topics brought to their settings: created when missing, grown when short.

Run by the migrate Job before the services start (`python -m lotlens_common.migrate`), and safe
to run again at every release: a topic with fewer partitions than `LOTLENS_TOPIC_PARTITIONS` gets
more (Kafka cannot take partitions away, so a larger existing count is left alone), and the
durability settings (`min.insync.replicas`, retention, message size) are applied to existing
topics too (record topics keep their events for good: `retention.ms=-1`). More partitions
change which partition a job id hashes to: LotLens's own consumers handle a job's events
idempotently and in any order, but a subscriber relying on one job's order on a topic may see a
running job's events out of it (docs/EVENT_LOG.md: size the count for years).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from lotlens_common.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 10 * 1024 * 1024


def topic_config(topics: TopicSettings, topic: str) -> dict[str, str]:
    """The configuration a pipeline topic is created with and kept at."""
    # `delete`, never `compact`: compaction would keep only the last event of each job.
    return {"retention.ms": str(topics.retention_of(topic)), "retention.bytes": "-1",
            "cleanup.policy": "delete", "max.message.bytes": str(MAX_MESSAGE_BYTES),
            "min.insync.replicas": str(topics.min_insync_replicas)}


def ensure_topics(settings: KafkaSettings, topics: TopicSettings, timeout_s: float = 30.0) -> None:
    """Create missing topics, add partitions to short ones, apply the topic settings (idempotent)."""
    admin = AdminClient(settings.client_config())
    existing = admin.list_topics(timeout=timeout_s).topics
    missing = [NewTopic(name, num_partitions=topics.partitions, replication_factor=topics.replication_factor,
                        config=topic_config(topics, name))
               for name in topics.all_topics() if name not in existing]
    # A topic created a moment ago (by another process, or just before this call) may be missing
    # from the listing yet: its create answers "already exists", and it is configured like the
    # listed ones (left out, it kept the settings it was created with: a loaded CI run).
    there = _wait(admin.create_topics(missing) if missing else {}, timeout_s,
                  KafkaError.TOPIC_ALREADY_EXISTS, "created")
    present = [name for name in topics.all_topics() if name in existing or name in there]
    if present:
        _configure(admin, topics, present, timeout_s)
    # One not listed yet has a count unknown here (an older release's, or auto-created with 1):
    # asked to grow all the same, it answers "already has as many" if it does.
    short = [NewPartitions(name, topics.partitions) for name in topics.all_topics()
             if name in there or (name in existing and len(existing[name].partitions) < topics.partitions)]
    _wait(admin.create_partitions(short) if short else {}, timeout_s, KafkaError.INVALID_PARTITIONS,
          f"grown to {topics.partitions} partitions")
    _wait_until_served(admin, topics, timeout_s)


def _wait_until_served(admin: AdminClient, topics: TopicSettings, timeout_s: float) -> None:
    """Return once every partition of every topic answers an offset query from its leader.

    CreateTopics answers before the brokers have taken the new partitions in, and the metadata
    names a leader a moment before that leader serves: a client that used the partitions at once
    got "Unknown partition" or "Not leader for partition" (the bench's first offset query, 10
    times out of 10).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            listed = admin.list_topics(timeout=timeout_s).topics
            latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
            partitions = {TopicPartition(name, p): latest for name in topics.all_topics()
                          for p in range(max(topics.partitions, len(listed[name].partitions)))}
            for future in admin.list_offsets(partitions, request_timeout=timeout_s).values():
                future.result(timeout_s)
            return
        except (KeyError, KafkaException) as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"partitions not served after {timeout_s:.0f} s: {exc}") from exc
            time.sleep(0.05)


def _configure(admin: AdminClient, topics: TopicSettings, names: list[str], timeout_s: float) -> None:
    """Set the topic settings incrementally: only these keys change, whatever else an SRE set."""
    deadline = time.monotonic() + timeout_s
    while True:
        resources = [ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in topic_config(topics, name).items()]) for name in names]
        try:
            for future in admin.incremental_alter_configs(resources).values():
                future.result(timeout_s)
            return
        except KafkaException as exc:
            # A topic created or grown a moment ago may not be known to every broker yet.
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _wait(futures: Mapping[str, Future[None]], timeout_s: float, harmless: int, done: str) -> set[str]:
    """Wait for each operation; the names whose answer was `harmless` (done already)."""
    already: set[str] = set()
    for name, future in futures.items():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            # Another process did the same a moment ago.
            if exc.args[0].code() != harmless:
                raise
            already.add(name)
        log.info("topic %s %s", name, done)
    return already
