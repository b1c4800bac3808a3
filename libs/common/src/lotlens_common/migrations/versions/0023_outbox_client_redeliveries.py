"""A client's webhook redelivery requests of the last minutes are counted (the gateway allows a
client so many jobs' redeliveries in 10 minutes): a small partial index finds them, where the
count read every row of the client's in the outbox, its lots included.

Built concurrently: the outbox keeps an hour of accepted events (millions of rows at peak intake),
and a plain CREATE INDEX would block intake's writes for the whole build. A build that was
interrupted leaves an invalid index under the name, which CREATE INDEX IF NOT EXISTS would take as
done: it is dropped first (as 0020_lots_request_order does).

Revision ID: 0023_outbox_client_redeliveries
Revises: 0022_dispatch_client_due
"""

from __future__ import annotations

import contextlib

import sqlalchemy as sa
from alembic import op

revision = "0023_outbox_client_redeliveries"
down_revision = "0022_dispatch_client_due"

NAME = "ix_outbox_client_redeliveries"


def upgrade() -> None:
    """Build the index concurrently, after dropping an invalid one left by an interrupted build,
    without the runner's lock timeout (0020_lots_request_order says why)."""
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        limit = bind.execute(sa.text("SELECT current_setting('lock_timeout')")).scalar_one()
        bind.execute(sa.text("SET lock_timeout = 0"))
        try:
            if _invalid(NAME):
                op.drop_index(NAME, table_name="outbox", postgresql_concurrently=True, if_exists=True)
            op.create_index(NAME, "outbox", ["client_id", "created_at"],
                            postgresql_where=sa.text("event_type = 'WebhookRedeliveryRequested'"),
                            postgresql_concurrently=True, if_not_exists=True)
        finally:
            with contextlib.suppress(sa.exc.SQLAlchemyError):  # a session gone ends with its setting
                bind.execute(sa.text("SELECT set_config('lock_timeout', :t, false)"), {"t": limit})


def downgrade() -> None:
    """Drop the index, concurrently too."""
    with op.get_context().autocommit_block():
        op.drop_index(NAME, table_name="outbox", postgresql_concurrently=True, if_exists=True)


def _invalid(name: str) -> bool:
    """An index of that name exists in the schema migrated (the search path's) and is not valid."""
    valid = op.get_bind().execute(
        sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"), {"n": name}).scalar()
    return valid is False
