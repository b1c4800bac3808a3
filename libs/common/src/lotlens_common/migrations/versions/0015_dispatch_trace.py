"""Each scheduled webhook delivery keeps its job's W3C trace context (the POST joins the job's trace).

Revision ID: 0015_dispatch_trace
Revises: 0011_outbox_client
"""

from __future__ import annotations

from alembic import op

revision = "0015_dispatch_trace"
down_revision = "0011_outbox_client"


def upgrade() -> None:
    """Add the nullable `traceparent` (NULL when tracing is off, and for rows scheduled before)."""
    op.execute("ALTER TABLE dispatch_queue ADD COLUMN IF NOT EXISTS traceparent text")


def downgrade() -> None:
    """Drop `traceparent` (a queued delivery's POST then starts a trace of its own, as before)."""
    op.execute("ALTER TABLE dispatch_queue DROP COLUMN IF EXISTS traceparent")
