"""Index idempotency keys by age, so purging expired keys does not scan the table.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    """Add the index (a database the old 0001 made with `create_all` may have it already)."""
    op.execute("CREATE INDEX IF NOT EXISTS ix_idempotency_keys_created_at "
               "ON idempotency_keys (created_at)")


def downgrade() -> None:
    """Drop the index (purging expired keys scans the table again)."""
    op.execute("DROP INDEX IF EXISTS ix_idempotency_keys_created_at")
