"""A shard remembers when its batch's create was asked, unless OpenAI refused it.

A create answered with a timeout or a 5xx may have made its batch, and the batch may land after
the answer: the next watch's recovery listed none yet and built the shard again, the first batch
was cancelled as a duplicate when it landed, and OpenAI billed what it had run. Recovery now waits
for such a batch a while (`lifecycle.CREATE_LANDS_S`) before building again.

A nullable column without a default: PostgreSQL rewrites no row, and a stage of the previous
release, running during a rolling upgrade, neither reads nor writes it (its shards are built again
at once, as before).

Revision ID: 0033_stage_shard_create_asked
Revises: 0032_idempotency_renewed_at
"""

from __future__ import annotations

from alembic import op

revision = "0033_stage_shard_create_asked"
down_revision = "0032_idempotency_renewed_at"


def upgrade() -> None:
    """Add `create_asked_at` to `stage_shards`."""
    op.execute("ALTER TABLE stage_shards ADD COLUMN IF NOT EXISTS create_asked_at timestamptz")


def downgrade() -> None:
    """Drop it (recovery then builds a shard whose create failed at its next watch, as before)."""
    op.execute("ALTER TABLE stage_shards DROP COLUMN IF EXISTS create_asked_at")
