"""A job can be the retry of another job's failed lots (`jobs.retry_of`, indexed both ways).

Revision ID: 0013_job_retry_of
Revises: 0013_client_webhook_secrets
"""

from __future__ import annotations

from alembic import op

revision = "0013_job_retry_of"
down_revision = "0013_client_webhook_secrets"


def upgrade() -> None:
    """Add the column and its index (a database the old 0001's `create_all` made may have both)."""
    op.execute("ALTER TABLE jobs ADD COLUMN IF NOT EXISTS retry_of text")
    op.execute("CREATE INDEX IF NOT EXISTS ix_jobs_retry_of ON jobs (retry_of)")


def downgrade() -> None:
    """Drop the index and the column. Which job retries which is lost from the read model only:
    `JobSubmitted` carries it, and `lotlens-admin projections rebuild` after upgrading again puts it back."""
    op.execute("DROP INDEX IF EXISTS ix_jobs_retry_of")
    op.execute("ALTER TABLE jobs DROP COLUMN IF EXISTS retry_of")
