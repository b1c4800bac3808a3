"""The outbox's index of a client's jobs covers its cancellations too: the jobs list looked for the
client's cancelled jobs the read models do not show yet by scanning every client's jobs.

Revision ID: 0019_outbox_client_events
Revises: 0018_dispatch_interruptions
"""

from __future__ import annotations

from alembic import op

revision = "0019_outbox_client_events"
down_revision = "0018_dispatch_interruptions"


def upgrade() -> None:
    """Replace `ix_outbox_client_jobs` (the outbox keeps about an hour of rows: a short build)."""
    op.execute("CREATE INDEX IF NOT EXISTS ix_outbox_client_events ON outbox (client_id, event_type) "
               "WHERE event_type IN ('JobSubmitted', 'JobCancelled')")
    op.execute("DROP INDEX IF EXISTS ix_outbox_client_jobs")


def downgrade() -> None:
    """Build `ix_outbox_client_jobs` again, then drop the index that replaced it."""
    op.execute("CREATE INDEX IF NOT EXISTS ix_outbox_client_jobs ON outbox (client_id) "
               "WHERE event_type = 'JobSubmitted'")
    op.execute("DROP INDEX IF EXISTS ix_outbox_client_events")
