"""The dispatcher claims due deliveries in turns between clients: each client's open deliveries are
read from an index of their own, earliest due first, and the clients found by skipping along it.

Built concurrently: `dispatch_queue` holds every delivery of the retention (millions of rows at
per-lot webhooks), and a plain CREATE INDEX blocks the dispatchers' claims and outcomes for the
whole build. A build that was interrupted leaves an invalid index under the name, which CREATE
INDEX IF NOT EXISTS would take as done: it is dropped first. `client_id` is set on every row
since the baseline: nothing to backfill.

Revision ID: 0022_dispatch_client_due
Revises: 0021_dispatch_post_started
"""

from __future__ import annotations

import contextlib

import sqlalchemy as sa
from alembic import op

revision = "0022_dispatch_client_due"
down_revision = "0021_dispatch_post_started"

NAME = "ix_dispatch_client_due"


def upgrade() -> None:
    """Build the index concurrently, after dropping an invalid one left by an interrupted build;
    without the runner's lock timeout (a concurrent build's waits queue no reads or writes, and
    bounded, it gave way to every long transaction: 0020_lots_request_order)."""
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        limit = bind.execute(sa.text("SELECT current_setting('lock_timeout')")).scalar_one()
        bind.execute(sa.text("SET lock_timeout = 0"))
        try:
            if _invalid(NAME):
                op.drop_index(NAME, table_name="dispatch_queue", postgresql_concurrently=True, if_exists=True)
            op.create_index(NAME, "dispatch_queue", ["client_id", "next_attempt_at"],
                            postgresql_where=sa.text("status IN ('pending', 'sending')"),
                            postgresql_concurrently=True, if_not_exists=True)
        finally:
            with contextlib.suppress(sa.exc.SQLAlchemyError):  # a session gone ends with its setting
                bind.execute(sa.text("SELECT set_config('lock_timeout', :t, false)"), {"t": limit})


def downgrade() -> None:
    """Drop the index, concurrently too."""
    with op.get_context().autocommit_block():
        op.drop_index(NAME, table_name="dispatch_queue", postgresql_concurrently=True, if_exists=True)


def _invalid(name: str) -> bool:
    """An index of that name exists in the schema migrated (the search path's) and is not valid."""
    valid = op.get_bind().execute(
        sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"), {"n": name}).scalar()
    return valid is False
