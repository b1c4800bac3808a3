"""The outbox rows carry their client: `batch-jobs` lists a client's jobs not projected yet.

Revision ID: 0011_outbox_client
Revises: 0013_usage
"""

from __future__ import annotations

from alembic import op

revision = "0011_outbox_client"
down_revision = "0013_usage"


def upgrade() -> None:
    """Add `client_id` (filled from each row's envelope) and the index of clients' submissions.

    Idempotent: a database created after `tables.py` gained the column has both already.
    """
    op.execute("ALTER TABLE outbox ADD COLUMN IF NOT EXISTS client_id text")
    op.execute("UPDATE outbox SET client_id = CAST(payload AS jsonb) ->> 'client_id' WHERE client_id IS NULL")
    op.execute("ALTER TABLE outbox ALTER COLUMN client_id SET NOT NULL")
    op.execute("CREATE INDEX IF NOT EXISTS ix_outbox_client_jobs ON outbox (client_id) "
               "WHERE event_type = 'JobSubmitted'")


def downgrade() -> None:
    """Drop the index and `client_id` (nothing lost: each row's envelope holds its client)."""
    op.execute("DROP INDEX IF EXISTS ix_outbox_client_jobs")
    op.execute("ALTER TABLE outbox DROP COLUMN IF EXISTS client_id")
