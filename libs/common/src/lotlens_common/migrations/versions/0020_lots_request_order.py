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

import sqlalchemy as sa

from lotlens_common.migrations import concurrent_indexes

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
    """Build both indexes concurrently (`concurrent_indexes` says how, and why without a lock timeout)."""
    concurrent_indexes.build("lots", INDEXES)


def downgrade() -> None:
    """Drop the indexes, concurrently too."""
    concurrent_indexes.drop("lots", INDEXES)
