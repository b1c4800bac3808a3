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

import sqlalchemy as sa

from lotlens_common.migrations import concurrent_indexes

revision = "0022_dispatch_client_due"
down_revision = "0021_dispatch_post_started"

NAME = "ix_dispatch_client_due"


def upgrade() -> None:
    """Build the index concurrently (`concurrent_indexes` says how, and why without a lock timeout)."""
    open_rows = sa.text("status IN ('pending', 'sending')")
    concurrent_indexes.build("dispatch_queue", {NAME: (["client_id", "next_attempt_at"], open_rows)})


def downgrade() -> None:
    """Drop the index, concurrently too."""
    concurrent_indexes.drop("dispatch_queue", [NAME])
