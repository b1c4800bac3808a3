"""The relay marks outbox rows published without touching an index.

`ix_outbox_unpublished` (topic, id) WHERE published_at IS NULL and `ix_outbox_published_at`
both name `published_at`, so each marking wrote a new version of the row elsewhere and a new entry
into every index of the outbox: 9.5 us of the database's CPU and 1.3-1.6 kB of WAL a row, about
0.5 CPU-s a 50,000-lot job. Without them, and with outbox pages filled to half (room for the
marked version of each row on its own page), the marking is heap-only: 3.3 us and under 0.1 kB
of WAL a row (measured on 50,000-row jobs). The relay now walks the primary key from a floor below
which every row is published (`outbox_floor`), and the prune by `id` (`outbox_prune`).

Dropped concurrently (`concurrent_indexes`): the outbox keeps an hour of accepted events. Only
pages written from now on are filled to half. Gateways of the previous release still running
during a rolling upgrade read the unpublished rows and prune without the indexes: slower, the
same rows. That release must be `63709e9` or later: the floor counts on every append taking its
transaction id before its COPY hands out ids, which earlier releases did after it.

Downgrade: the two indexes built again concurrently, full pages again for what is written next.

Revision ID: 0039_outbox_heap_only_marks
Revises: 0038_stage_shard_batch_created
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from lotlens_common.migrations import concurrent_indexes

revision = "0039_outbox_heap_only_marks"
down_revision = "0038_stage_shard_batch_created"

DROPPED = {"ix_outbox_unpublished": ([sa.text("topic"), sa.text("id")], sa.text("published_at IS NULL")),
           "ix_outbox_published_at": ([sa.text("published_at")], None)}


def upgrade() -> None:
    """Fill outbox pages to half, then drop the two indexes on `published_at`."""
    op.execute("ALTER TABLE outbox SET (fillfactor = 50)")
    concurrent_indexes.drop("outbox", DROPPED)


def downgrade() -> None:
    """Build the two indexes again, then fill pages whole."""
    concurrent_indexes.build("outbox", DROPPED)
    op.execute("ALTER TABLE outbox RESET (fillfactor)")
