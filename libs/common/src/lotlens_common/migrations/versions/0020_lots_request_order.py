"""A job's lots are read in request order from an index: the results download sorted all of a big
job's lots for each chunk of 1,000, the lots page for each page, and the webhook dispatcher read all
of them to find one URL's.

Built concurrently: `lots` is the largest table, and a plain CREATE INDEX blocks its writes for the
whole build. A build that was interrupted (a lock wait given up, a killed Job) leaves an invalid
index under the name, which CREATE INDEX IF NOT EXISTS would take as done: it is dropped first.
A database created since has both from 0001's create_all.

Revision ID: 0020_lots_request_order
Revises: 0019_outbox_client_events
"""

from __future__ import annotations

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
    """Build each index concurrently, after dropping an invalid one left by an interrupted build."""
    with op.get_context().autocommit_block():
        for name, (columns, where) in INDEXES.items():
            if _invalid(name):
                op.drop_index(name, table_name="lots", postgresql_concurrently=True, if_exists=True)
            op.create_index(name, "lots", columns, postgresql_where=where, postgresql_concurrently=True,
                            if_not_exists=True)


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
