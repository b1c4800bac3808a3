"""Recovery after a fault is cleared: the backlog every consumer group had then is consumed (lag
back to zero, whichever instance owns the partition) and a fresh job completes (status current).

Both are needed: a probe job lands on one partition per topic, so on its own it says nothing about
the partitions of a killed instance, and lag alone says nothing about the gateway or a stage's
batches. Offsets are read on the run's broker; each poll costs one offset request per group.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

# OffsetSpec is exported untyped (no annotations in confluent-kafka's stubs).
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from lotlens_client import LotLensClient, LotLensError

log = logging.getLogger("chaos")
POLL_S = 0.25


@dataclass(frozen=True)
class Backlog:
    """Per consumer group, the end offset of each partition it reads, when the fault was cleared."""

    ends: dict[str, dict[tuple[str, int], int]]

    @classmethod
    def now(cls, admin: AdminClient, prefix: str) -> Backlog:
        """The run's groups (named `prefix`...) and the partitions each reads (assigned to a
        member, dead ones included, or committed before), with their end offsets now."""
        listed = admin.list_consumer_groups().result(timeout=10)
        groups = [g.group_id for g in listed.valid if g.group_id.startswith(prefix)]
        ends: dict[str, dict[tuple[str, int], int]] = {}
        for group, described in admin.describe_consumer_groups(groups).items():
            assigned = {(tp.topic, tp.partition) for member in described.result(timeout=10).members
                        for tp in member.assignment.topic_partitions}
            ends[group] = dict.fromkeys(assigned | set(_committed(admin, group)), 0)
        wanted = {TopicPartition(t, p): OffsetSpec.latest()  # type: ignore[no-untyped-call]
                  for parts in ends.values() for t, p in parts}
        if wanted:
            latest = {(tp.topic, tp.partition): future.result(timeout=10).offset
                      for tp, future in admin.list_offsets(wanted).items()}
            ends = {group: {tp: latest[tp] for tp in parts} for group, parts in ends.items()}
        return cls(ends)

    def consumed(self, admin: AdminClient) -> bool:
        """True once every group has committed past each partition's end offset of then."""
        for group, parts in self.ends.items():
            committed = _committed(admin, group)
            if any(committed.get(tp, 0) < end for tp, end in parts.items()):
                return False
        return True


def _committed(admin: AdminClient, group: str) -> dict[tuple[str, int], int]:
    """A group's committed offsets (partitions it never committed on are left out)."""
    request = [ConsumerGroupTopicPartitions(group)]
    found = admin.list_consumer_group_offsets(request)[group].result(timeout=10)
    return {(tp.topic, tp.partition): tp.offset for tp in found.topic_partitions if tp.offset >= 0}


def recovery(client: LotLensClient, admin: AdminClient, prefix: str, images: str,
             timeout_s: float) -> float | None:
    """Seconds from now (the fault just cleared) until the backlog of then is consumed and a fresh
    2-lot job is completed; None when that did not happen within `timeout_s`."""
    started = time.monotonic()
    lots = [{"lot_id": f"probe-{started}-{i}", "additional_info": "probe",
             "images": [{"url": f"{images}/probe-{started}-{i}.png"}]} for i in range(2)]
    backlog: Backlog | None = None
    job_id: str | None = None
    # Seconds until each part was seen: logged, to tell which one a slow recovery waited for.
    completed_s = drained_s = None
    while time.monotonic() - started < timeout_s:
        try:
            # A broker just restarted may not answer yet: the snapshot is retried, not skipped.
            backlog = backlog or Backlog.now(admin, prefix)
            if drained_s is None and backlog.consumed(admin):
                drained_s = time.monotonic() - started
        except (KafkaException, TimeoutError):
            pass
        try:
            job_id = job_id or client.submit_job(lots, ["en"]).job_id
            if completed_s is None and client.job_status(job_id).status == "completed":
                completed_s = time.monotonic() - started
        except LotLensError:
            pass
        if completed_s is not None and drained_s is not None:
            log.info("backlog consumed after %.1f s, probe completed after %.1f s", drained_s, completed_s)
            return max(completed_s, drained_s)
        time.sleep(POLL_S)
    log.warning("not recovered: backlog consumed after %s s, probe completed after %s s",
                drained_s, completed_s)
    return None
