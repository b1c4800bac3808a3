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

import sqlalchemy as sa

from lotlens_common.migrations import concurrent_indexes

revision = "0023_outbox_client_redeliveries"
down_revision = "0022_dispatch_client_due"

NAME = "ix_outbox_client_redeliveries"


def upgrade() -> None:
    """Build the index concurrently (`concurrent_indexes` says how, and why without a lock timeout)."""
    redeliveries = sa.text("event_type = 'WebhookRedeliveryRequested'")
    concurrent_indexes.build("outbox", {NAME: (["client_id", "created_at"], redeliveries)})


def downgrade() -> None:
    """Drop the index, concurrently too."""
    concurrent_indexes.drop("outbox", [NAME])
