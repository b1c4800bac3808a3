"""Tokens and estimated cost: per lot and stage (`lots.usage`), per finished job (`jobs.usage`).

Revision ID: 0013_usage
Revises: 0013_job_retry_of
"""

from __future__ import annotations

from alembic import op

revision = "0013_usage"
down_revision = "0013_job_retry_of"


def upgrade() -> None:
    """Add the two JSON columns (a database the old 0001's `create_all` made may have them)."""
    op.execute("ALTER TABLE lots ADD COLUMN IF NOT EXISTS usage jsonb")
    op.execute("ALTER TABLE jobs ADD COLUMN IF NOT EXISTS usage jsonb")


def downgrade() -> None:
    """Drop both columns. Tokens and cost are lost from the read models only: `VisionCompleted` and
    `TranslationCompleted` carry them, and `lotlens-admin projections rebuild` after upgrading again
    puts them back."""
    op.execute("ALTER TABLE jobs DROP COLUMN IF EXISTS usage")
    op.execute("ALTER TABLE lots DROP COLUMN IF EXISTS usage")
