"""A shard whose batch cannot be read says so on its row, and an operator can release it.

A stage that cannot read a batch it created (401/403/404: a key of another OpenAI project, a
deleted project) pauses until a listing tells what became of the batch; a key that sees none of
our batches kept it paused for good, known only to the process's memory, and the on-call had no
way out but editing tables by hand. The stage now records the pause on the shard
(`unreadable_since`, `unreadable_reason`), and `lotlens-admin shards release` records the
operator's decision (`release`: `resend` or `fail`, `released_by`, `released_at`,
`release_reason`), which the stage carries out.

Nullable columns with no default: PostgreSQL rewrites no row, and stages of the previous release,
running during a rolling upgrade, neither read nor write them.

Revision ID: 0026_stage_shard_release
Revises: 0025_outbox_job_order
"""

from __future__ import annotations

from alembic import op

revision = "0026_stage_shard_release"
down_revision = "0025_outbox_job_order"

COLUMNS = (("unreadable_since", "timestamptz"), ("unreadable_reason", "text"), ("release", "text"),
           ("released_by", "text"), ("released_at", "timestamptz"), ("release_reason", "text"))


def upgrade() -> None:
    """Add the pause and release columns to `stage_shards`."""
    op.execute("ALTER TABLE stage_shards " + ", ".join(
        f"ADD COLUMN IF NOT EXISTS {name} {kind}" for name, kind in COLUMNS))


def downgrade() -> None:
    """Drop them (a release recorded but not carried out yet is lost with them)."""
    op.execute("ALTER TABLE stage_shards " + ", ".join(
        f"DROP COLUMN IF EXISTS {name}" for name, _ in COLUMNS))
