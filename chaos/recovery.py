"""Recovery after a fault is cleared: the backlog every consumer group had then is consumed (lag
back to zero, whichever instance owns the partition: statuses reflect every event of then), a
killed consumer instance is back in its groups, and the gateway accepts a probe job and answers
its status. The probe's completion is measured too, apart and without waiting for it (read at the
seed's end): it also waits for the jobs queued before it (a 5,000-lot job's batches), which says
more about load than about recovery.

A probe job alone would not do: it lands on one partition per topic, so it says nothing about the
partitions of a killed instance. Offsets and members are read on the run's broker, every 0.25 s.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition

# OffsetSpec is exported untyped (no annotations in confluent-kafka's stubs).
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from sqlalchemy import Engine, select

from lotlens_client import LotLensClient, LotLensError
from lotlens_common.tables import jobs

log = logging.getLogger("chaos")
POLL_S = 0.25


@dataclass(frozen=True)
class Backlog:
    """Per consumer group, the end offset of each partition it reads, when the fault was cleared."""

    ends: dict[str, dict[tuple[str, int], int]]

    @classmethod
    def now(cls, admin: AdminClient, groups: list[str]) -> Backlog:
        """The partitions each group reads (assigned to a member, dead ones included, or
        committed before), with their end offsets now."""
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

    def behind(self, admin: AdminClient) -> list[str]:
        """The groups that have not yet committed past each partition's end offset of then."""
        return [group for group, parts in self.ends.items()
                if any(_committed(admin, group).get(tp, 0) < end for tp, end in parts.items())]


def consumer_groups(bootstrap: str, prefix: str) -> list[str]:
    """The run's consumer groups (named `prefix`...), to list before a fault: a broker that has
    just restarted lists none, or only those whose coordinator has loaded them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept: the future dies with its client
    listed = admin.list_consumer_groups().result(timeout=10)
    groups = [g.group_id for g in listed.valid if g.group_id.startswith(prefix)]
    if not groups:
        raise RuntimeError(f"no consumer group of the run ({prefix}...) is listed")
    return groups


def _committed(admin: AdminClient, group: str) -> dict[tuple[str, int], int]:
    """A group's committed offsets (partitions it never committed on are left out)."""
    request = [ConsumerGroupTopicPartitions(group)]
    found = admin.list_consumer_group_offsets(request)[group].result(timeout=10)
    return {(tp.topic, tp.partition): tp.offset for tp in found.topic_partitions if tp.offset >= 0}


def members(bootstrap: str, groups: list[str], instance: str) -> dict[str, str]:
    """The member id under which a service instance (static membership: its group instance ids
    start with its run name) belongs to each of the run's groups."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return {group: member_id for group, (member_id, _) in _members(admin, groups, instance).items()}


def _members(admin: AdminClient, groups: list[str], instance: str) -> dict[str, tuple[str, int]]:
    """Per group: the instance's member id and how many partitions it is assigned."""
    found: dict[str, tuple[str, int]] = {}
    for group, described in admin.describe_consumer_groups(groups).items():
        for member in described.result(timeout=10).members:
            if (member.group_instance_id or "").startswith(f"{instance}-"):
                found[group] = (member.member_id, len(member.assignment.topic_partitions))
    return found


def _rejoined(admin: AdminClient, instance: str, before: dict[str, str]) -> bool:
    """True once the instance is back in every group it was in, as a new member with partitions."""
    now = _members(admin, list(before), instance)
    return all(group in now and now[group][0] != old and now[group][1] > 0 for group, old in before.items())


@dataclass(frozen=True)
class Recovery:
    """Seconds from a fault's clearing until the pipeline was current again (the backlog of then
    consumed, a killed instance rejoined, the gateway accepting jobs; None: not within the
    timeout), and the probe job submitted then, whose completion is read at the seed's end."""

    seconds: float | None
    cleared_at: datetime
    probe_job: str | None


def recovery(client: LotLensClient, bootstrap: str, groups: list[str], images: str, timeout_s: float,
             rejoining: tuple[str, dict[str, str]] | None = None) -> Recovery:
    """Measure a recovery from now (the fault just cleared) of the run's `groups`; `rejoining` is
    a killed instance and its member ids from before the kill."""
    started, cleared_at = time.monotonic(), datetime.now(UTC)
    # A client of its own: one that lived through a broker restart or a cut connection was seen
    # answering nothing for minutes after.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    lots = [{"lot_id": f"probe-{started}-{i}", "additional_info": "probe",
             "images": [{"url": f"{images}/probe-{started}-{i}.png"}]} for i in range(2)]
    backlog: Backlog | None = None
    job_id: str | None = None
    # Seconds until each part was seen (logged, to tell which one a slow recovery waited for).
    seen: dict[str, float] = {} if rejoining else {"rejoined": 0.0}
    behind: list[str] = []  # the groups the backlog waited for last
    while time.monotonic() - started < timeout_s and len(seen) < 3:
        elapsed = time.monotonic() - started
        # A broker just restarted may not answer yet: the snapshot is retried next round, not skipped.
        with contextlib.suppress(KafkaException, TimeoutError):
            backlog = backlog or Backlog.now(admin, groups)
            if "drained" not in seen:
                lagging = backlog.behind(admin)
                if lagging:
                    behind = lagging
                else:
                    seen["drained"] = elapsed
            if rejoining and "rejoined" not in seen and _rejoined(admin, *rejoining):
                seen["rejoined"] = elapsed
        # Refused or failed while the service recovers: asked again next round.
        with contextlib.suppress(LotLensError):
            job_id = job_id or client.submit_job(lots, ["en"]).job_id
            client.job_status(job_id)
            seen.setdefault("accepted", elapsed)
        if len(seen) < 3:
            time.sleep(POLL_S)
    log.info("seen after: %s (last behind: %s)", ", ".join(f"{part} {s:.1f} s" for part, s in seen.items()),
             ", ".join(behind) or "none")
    return Recovery(max(seen.values()) if len(seen) == 3 else None, cleared_at, job_id)


def probe_seconds(engine: Engine, recoveries: list[Recovery]) -> list[float | None]:
    """Per recovery, seconds from the fault's clearing until its probe job completed (None: no
    probe job, or not completed); read once the seed's jobs are done."""
    ids = [r.probe_job for r in recoveries if r.probe_job]
    with engine.connect() as conn:
        rows = conn.execute(select(jobs.c.job_id, jobs.c.completed_at).where(jobs.c.job_id.in_(ids)))
        completed = {job_id: at for job_id, at in rows if at is not None}
    return [(completed[r.probe_job] - r.cleared_at).total_seconds() if r.probe_job in completed else None
            for r in recoveries]
