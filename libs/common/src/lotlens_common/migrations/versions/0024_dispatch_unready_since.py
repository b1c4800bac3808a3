"""Each open delivery says since when it has been unable to start (its client has no key, its job
is not in the read models): the dispatcher gives it up that long after, not that long after it
was scheduled. Measured from `created_at`, a delivery pending over the bound (the dispatcher
down or backlogged, or parked by Retry-After) that met one passing unready (a key briefly
missing in a configuration rollout) was failed at once.

Revision ID: 0024_dispatch_unready_since
Revises: 0023_outbox_client_redeliveries
"""

from __future__ import annotations

from alembic import op

revision = "0024_dispatch_unready_since"
down_revision = "0023_outbox_client_redeliveries"


def upgrade() -> None:
    """Add `unready_since`, nullable with no default (PostgreSQL rewrites no row): NULL, a delivery
    met no unready since its last attempt."""
    op.execute("ALTER TABLE dispatch_queue ADD COLUMN IF NOT EXISTS unready_since timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE dispatch_queue DROP COLUMN IF EXISTS unready_since")
