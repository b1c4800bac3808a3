"""Each delivery counts its interrupted attempts apart: an attempt a dead instance left unrecorded
no longer uses up one of the five (the last one was given up unsent).

Revision ID: 0018_dispatch_interruptions
Revises: 0017_shard_tokens_bigint
"""

from __future__ import annotations

from alembic import op

revision = "0018_dispatch_interruptions"
down_revision = "0017_shard_tokens_bigint"


def upgrade() -> None:
    """Add `interruptions` (a constant default: PostgreSQL rewrites no row)."""
    op.execute("ALTER TABLE dispatch_queue ADD COLUMN IF NOT EXISTS interruptions integer NOT NULL DEFAULT 0")


def downgrade() -> None:
    """Drop `interruptions` (the interrupted attempts counted so far are forgotten: the older
    release counts each one as one of the five, as it did)."""
    op.execute("ALTER TABLE dispatch_queue DROP COLUMN IF EXISTS interruptions")
