"""A submitted shard remembers when OpenAI created its batch.

`lotlens_openai_oldest_batch_age_seconds` (LotLensOpenAIBatchOverAge fires past 20 h) was the age
of the oldest submitted shard's row: when its lots were claimed, not when its batch was made. A
shard whose sends were refused for the quota over a weekend kept its claim time through every
rebuild, so its fresh batch fired the alert at once; a batch adopted by the reconciler got a new
row, so an old batch was never warned about. The stage's own max-age cancel and OpenAI's expiry
go by the batch's `created_at`; the gauge now does too.

A nullable column without a default: PostgreSQL rewrites no row. Shards recorded before it (or by
a stage of the previous release during a rolling upgrade) have none, and their claim time stands in.

Revision ID: 0038_stage_shard_batch_created
Revises: 0037_lots_fillfactor
"""

from __future__ import annotations

from alembic import op

revision = "0038_stage_shard_batch_created"
down_revision = "0037_lots_fillfactor"


def upgrade() -> None:
    """Add `batch_created_at` to `stage_shards`."""
    op.execute("ALTER TABLE stage_shards ADD COLUMN IF NOT EXISTS batch_created_at timestamptz")


def downgrade() -> None:
    """Drop it (the gauge then reads the shards' claim times, as before)."""
    op.execute("ALTER TABLE stage_shards DROP COLUMN IF EXISTS batch_created_at")
