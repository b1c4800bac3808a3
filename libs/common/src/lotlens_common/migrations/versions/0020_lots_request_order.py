"""A job's lots are read in request order from an index: the results download sorted all of a big
job's lots for each chunk of 1,000, the lots page for each page, and the webhook dispatcher read all
of them to find one URL's.

Built concurrently: `lots` is the largest table, and a plain CREATE INDEX blocks its writes for the
whole build. A build that was interrupted (a lock wait given up, a killed Job) leaves an invalid
index under the name, which CREATE INDEX IF NOT EXISTS would take as done: it is dropped first.
A database the old 0001 made (`create_all` of the models of its day) may have both already.

Revision ID: 0020_lots_request_order
Revises: 0019_outbox_client_events
"""

from __future__ import annotations

import contextlib

import sqlalchemy as sa
from alembic import op

revision = "0020_lots_request_order"
down_revision = "0019_outbox_client_events"

# `read_models.REQUEST_ORDER`, written out: a migration keeps the definition it was written with.
_ORDER = [sa.text("coalesce(seq, 2147483647)"), sa.text("lot_id")]
# The URL hashed: intake takes webhook URLs of up to 8,192 characters, and a B-tree entry holds at
# most 2,704 bytes (a longer URL would fail its lot's projection, and this build).
INDEXES = {
    "ix_lots_request_order": ([sa.text("job_id"), *_ORDER], None),
    "ix_lots_webhook_order": ([sa.text("job_id"), sa.text("md5(webhook)"), *_ORDER],
                              sa.text("webhook IS NOT NULL")),
}


def upgrade() -> None:
    """Build each index concurrently, after dropping an invalid one left by an interrupted build.

    Without the runner's lock timeout: it is there so that DDL waiting for a table lock does not
    queue intake and the stages behind it, but a concurrent build's waits (for older transactions,
    and its SHARE UPDATE EXCLUSIVE lock) queue no reads or writes. Bounded at 5 s, any transaction
    longer than that (the dispatcher streaming a big job's lots) made the build give way, throw its
    work away and start again, until the migrate Job failed.
    """
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        limit = bind.execute(sa.text("SELECT current_setting('lock_timeout')")).scalar_one()
        bind.execute(sa.text("SET lock_timeout = 0"))
        try:
            for name, (columns, where) in INDEXES.items():
                if _invalid(name):
                    op.drop_index(name, table_name="lots", postgresql_concurrently=True, if_exists=True)
                op.create_index(name, "lots", columns, postgresql_where=where, postgresql_concurrently=True,
                                if_not_exists=True)
        finally:
            with contextlib.suppress(sa.exc.SQLAlchemyError):  # a session gone ends with its setting
                bind.execute(sa.text("SELECT set_config('lock_timeout', :t, false)"), {"t": limit})


def downgrade() -> None:
    """Drop the indexes, concurrently too."""
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.drop_index(name, table_name="lots", postgresql_concurrently=True, if_exists=True)


def _invalid(name: str) -> bool:
    """An index of that name exists in the schema migrated (the search path's) and is not valid."""
    valid = op.get_bind().execute(
        sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"), {"n": name}).scalar()
    return valid is False
