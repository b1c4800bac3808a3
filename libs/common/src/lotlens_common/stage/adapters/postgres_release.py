"""A shard whose batch cannot be read, and an operator's release of it, on `stage_shards`.

The stage notes the pause such a shard holds (`note_unreadable`) and carries a release out
(`stage/release.py`); `lotlens-admin shards` lists the paused shards and records the operator's
decision (`release`), the only columns of these tables it writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select, text, update

from lotlens_common.stage.adapters.postgres_quota import HOLDING
from lotlens_common.tables import stage_shards

# The shards that hold their stage paused: submitted ones whose batch cannot be read or whose
# release is not carried out yet, and building ones refused for the quota (`postgres_quota`).
PAUSING = ("(status = 'submitted' AND (unreadable_since IS NOT NULL OR release IS NOT NULL))"
           f" OR ({HOLDING})")


@dataclass(frozen=True)
class ShardRecord:
    """A shard as on-call needs it to decide on a release: where it is, since when its batch
    cannot be read and why, and the release recorded on it (if any)."""

    stage: str
    shard_id: str
    job_id: str
    status: str
    batch_id: str | None
    batch_status: str | None
    lot_count: int
    unreadable_since: datetime | None
    unreadable_reason: str | None
    release: str | None
    released_by: str | None
    released_at: datetime | None
    release_reason: str | None
    # A building shard whose batch OpenAI refused to create for the quota (`stage/quota.py`).
    quota_paused_since: datetime | None
    quota_reason: str | None
    quota_retry_at: datetime | None


_COLUMNS = (stage_shards.c.stage, stage_shards.c.shard_id, stage_shards.c.job_id, stage_shards.c.status,
            stage_shards.c.batch_id, stage_shards.c.batch_status, stage_shards.c.lot_count,
            stage_shards.c.unreadable_since, stage_shards.c.unreadable_reason, stage_shards.c.release,
            stage_shards.c.released_by, stage_shards.c.released_at, stage_shards.c.release_reason,
            stage_shards.c.quota_paused_since, stage_shards.c.quota_reason, stage_shards.c.quota_retry_at)


def note_unreadable(conn: Connection, shard_id: str, reason: str | None) -> None:
    """Record why a submitted shard's batch cannot be read, keeping since when (None: it can be
    again). Like `note_batch_status`, written without the shard's lock: a shard closed since keeps
    what it had.

    A batch read again also drops a release not carried out yet: one recorded while the read was
    under way (on-call restoring the old key as another releases) was carried out at the next
    round, the lots of a batch that runs, and will be paid, sent again."""
    values: dict[str, object] = {"unreadable_since": None, "unreadable_reason": None}
    if reason is None:
        values |= {"release": None, "released_by": None, "released_at": None, "release_reason": None}
    else:
        values |= {"unreadable_since": func.coalesce(stage_shards.c.unreadable_since, func.now()),
                   "unreadable_reason": reason}
    conn.execute(update(stage_shards).where(stage_shards.c.shard_id == shard_id,
                                            stage_shards.c.status == "submitted")
                 .values(**values, updated_at=func.now()))


def paused_shards(conn: Connection) -> list[ShardRecord]:
    """Every shard that holds its stage paused (`PAUSING`), oldest pause first."""
    since = func.coalesce(stage_shards.c.unreadable_since, stage_shards.c.quota_paused_since)
    rows = conn.execute(select(*_COLUMNS).where(text(PAUSING))
                        .order_by(since.asc().nulls_last(), stage_shards.c.created_at))
    return [ShardRecord(**row._asdict()) for row in rows]


def shard_record(conn: Connection, shard_id: str) -> ShardRecord | None:
    """One shard, if it is on record."""
    row = conn.execute(select(*_COLUMNS).where(stage_shards.c.shard_id == shard_id)).first()
    return None if row is None else ShardRecord(**row._asdict())


def release(conn: Connection, shard_id: str, decision: str, by: str, why: str) -> bool:
    """Record the operator's decision on a submitted shard whose batch cannot be read and that no
    release was recorded on yet; whether it was recorded (one conditional statement: a stage
    that reads the batch again, or another release, in the meantime makes it change nothing)."""
    recorded = conn.execute(update(stage_shards).where(
        stage_shards.c.shard_id == shard_id, stage_shards.c.status == "submitted",
        stage_shards.c.unreadable_since.is_not(None), stage_shards.c.release.is_(None))
        .values(release=decision, released_by=by, released_at=func.now(), release_reason=why,
                updated_at=func.now()))
    return bool(recorded.rowcount)
