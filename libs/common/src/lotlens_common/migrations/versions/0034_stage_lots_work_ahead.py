"""A lot's work fields the previous release does not know are kept apart, in `work_ahead`.

A vision lot cut off at its output budget goes again with more room (`VisionWork.output_room`).
Written into `work`, a vision-batcher of the previous release (its work refuses unknown fields)
failed its claim of that row with a ValidationError, every round: that pod sent and collected
nothing until it was replaced, and after a rollback every pod did so until the row was gone.
That release reads `work` alone, so the lot is sent by it with its own room.

A nullable column without a default: PostgreSQL rewrites no row.

Revision ID: 0034_stage_lots_work_ahead
Revises: 0033_stage_shard_create_asked
"""

from __future__ import annotations

from alembic import op

revision = "0034_stage_lots_work_ahead"
down_revision = "0033_stage_shard_create_asked"


def upgrade() -> None:
    """Add `work_ahead` to `stage_lots`."""
    op.execute("ALTER TABLE stage_lots ADD COLUMN IF NOT EXISTS work_ahead jsonb")


def downgrade() -> None:
    """Drop it (a lot waiting with more room is then sent with the configured one)."""
    op.execute("ALTER TABLE stage_lots DROP COLUMN IF EXISTS work_ahead")
