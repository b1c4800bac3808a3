"""Each claimed delivery says whether its attempt's POST has started: a claim whose lease ran out
before it had was never sent, and is made again instead of being recorded as interrupted (an
instance that lost PostgreSQL before it could hand the claim back left a false interruption).

Revision ID: 0021_dispatch_post_started
Revises: 0020_lots_request_order
"""

from __future__ import annotations

from alembic import op

revision = "0021_dispatch_post_started"
down_revision = "0020_lots_request_order"


def upgrade() -> None:
    """Add `post_started`, true for the rows there are (a constant default: PostgreSQL rewrites no
    row); a row an older instance holds may have been sent, so its lease running out is an
    interruption, as it was."""
    op.execute("ALTER TABLE dispatch_queue ADD COLUMN IF NOT EXISTS post_started boolean NOT NULL"
               " DEFAULT true")



def downgrade() -> None:
    """Drop `post_started` (an open claim whose lease runs out is then an interruption, as before)."""
    op.execute("ALTER TABLE dispatch_queue DROP COLUMN IF EXISTS post_started")
