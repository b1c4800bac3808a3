"""The stage's quota pause on `stage_shards`: kept on the rows of the `building` shards whose
batch OpenAI refused for the quota, so every instance of the stage, and the next process, holds it
(`stage/quota.py`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, text

from lotlens_common.stage.ports import QuotaPause

# The shards holding a stage's pause: a shard sent since, or closed (its lots cancelled), holds none.
HOLDING = "status = 'building' AND quota_retry_at IS NOT NULL"
_HOLDING = f"stage = :stage AND {HOLDING}"


def quota_pause(conn: Connection, stage: str) -> QuotaPause | None:
    """The stage's pause: the latest refusal's reason, since the first one, and the next try (the
    latest any instance set)."""
    row = conn.execute(text(f"""
        SELECT (array_agg(quota_reason ORDER BY quota_retry_at DESC))[1] AS reason,
               extract(epoch FROM now() - min(quota_paused_since)) AS paused_s,
               extract(epoch FROM max(quota_retry_at) - now()) AS retry_in_s
          FROM stage_shards WHERE {_HOLDING}"""), {"stage": stage}).one()
    if row.reason is None:
        return None
    return QuotaPause(row.reason, float(row.paused_s), float(row.retry_in_s))


def note_refused(conn: Connection, stage: str, shard_id: str, reason: str, wait_s: float) -> None:
    """The shard's batch was refused for the quota: it holds the pause, which keeps its beginning
    if one holds already (the wait grows with it), until a try `wait_s` from now."""
    conn.execute(text(f"""
        UPDATE stage_shards
           SET quota_paused_since = coalesce((SELECT min(quota_paused_since) FROM stage_shards
                                               WHERE {_HOLDING}), now()),
               quota_reason = :reason, quota_retry_at = now() + make_interval(secs => :wait_s),
               updated_at = now()
         WHERE shard_id = :shard_id AND status = 'building'"""),
        {"stage": stage, "shard_id": shard_id, "reason": reason, "wait_s": wait_s})


def take_try(conn: Connection, stage: str, wait_s: float) -> datetime | None:
    """Put the next try `wait_s` from now if the pause's try is due; that time, if this did.

    One statement: instances asking at once wait for each other's row locks, and PostgreSQL
    checks `quota_retry_at <= now()` again on the rows the first one moved on, so the others
    move none (a read, then a write, let both take the try and both upload).
    """
    taken = conn.execute(text(f"""
        UPDATE stage_shards SET quota_retry_at = now() + make_interval(secs => :wait_s)
         WHERE {_HOLDING} AND quota_retry_at <= now()
           AND NOT EXISTS (SELECT 1 FROM stage_shards WHERE {_HOLDING} AND quota_retry_at > now())
        RETURNING quota_retry_at"""), {"stage": stage, "wait_s": wait_s})
    moved_to: datetime | None = taken.scalar()
    return moved_to


def give_back_try(conn: Connection, stage: str, moved_to: datetime) -> None:
    """The try `take_try` took (putting the next one at `moved_to`) asked no create: due again now,
    on the rows that still hold `moved_to`. A create another instance had begun before the pause
    may have been refused since: its row holds its own wait, which a try given back on every row
    cut short (the pause's beginning, which the wait grows from, is untouched)."""
    conn.execute(text(f"""
        UPDATE stage_shards SET quota_retry_at = now()
         WHERE {_HOLDING} AND quota_retry_at = :moved_to"""), {"stage": stage, "moved_to": moved_to})


def end(conn: Connection, stage: str) -> None:
    """A batch of the stage was created: no shard holds the pause."""
    conn.execute(text(f"""
        UPDATE stage_shards SET quota_paused_since = NULL, quota_reason = NULL, quota_retry_at = NULL,
               updated_at = now()
         WHERE {_HOLDING}"""), {"stage": stage})
