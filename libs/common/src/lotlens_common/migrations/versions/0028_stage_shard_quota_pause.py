"""A shard whose batch OpenAI refused for the quota says so on its row, for every instance.

A create refused with 429 `insufficient_quota` paused only the process that saw it, in its
memory: another replica, or the same one restarted, built, uploaded and created again at once, so
N replicas put N files of customer image URLs at OpenAI every round of a billing outage. The pause
is now kept on the refused shard's row (`quota_paused_since`, when the pause began;
`quota_reason`, OpenAI's answer; `quota_retry_at`, when its next try is due), read by every
instance before it builds, and its try taken there by one instance at a time.

Nullable columns with no default: PostgreSQL rewrites no row, and stages of the previous release,
running during a rolling upgrade, neither read nor write them.

Revision ID: 0028_stage_shard_quota_pause
Revises: 0027_dispatch_interruption_log
"""

from __future__ import annotations

from alembic import op

revision = "0028_stage_shard_quota_pause"
down_revision = "0027_dispatch_interruption_log"

COLUMNS = (("quota_paused_since", "timestamptz"), ("quota_reason", "text"), ("quota_retry_at", "timestamptz"))


def upgrade() -> None:
    """Add the quota pause's columns to `stage_shards`."""
    op.execute("ALTER TABLE stage_shards " + ", ".join(
        f"ADD COLUMN IF NOT EXISTS {name} {kind}" for name, kind in COLUMNS))


def downgrade() -> None:
    """Drop them (a pause in force is forgotten: the next create tries again)."""
    op.execute("ALTER TABLE stage_shards " + ", ".join(
        f"DROP COLUMN IF EXISTS {name}" for name, _ in COLUMNS))
