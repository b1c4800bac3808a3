"""A shard's estimated tokens as bigint: 50,000 lots of 17 images are 2.3 billion tokens by
o4-mini's estimate, past a 32-bit integer, and the claim failed every round, stalling the stage.

Downgrade: refused while a shard's estimate is past 2,147,483,647 (the older schema cannot hold it).

Revision ID: 0017_shard_tokens_bigint
Revises: 0016_stage_places
"""

from __future__ import annotations

from alembic import op

from lotlens_common.migrations.refusals import Refusal

revision = "0017_shard_tokens_bigint"
down_revision = "0016_stage_places"

REFUSAL = Refusal(
    ("stage_shards",), "SELECT count(*) FROM stage_shards WHERE estimated_tokens > 2147483647",
    "{n} shard(s) in stage_shards estimate more tokens than the release before 0017_shard_tokens_bigint "
    "can hold (2,147,483,647): wait until they are collected and pruned, or set those estimates to "
    "2147483647 (the token budget then undercounts them), and downgrade again")


def upgrade() -> None:
    """Widen the column (stage_shards holds a row per batch sent: rewriting it is quick)."""
    op.execute("ALTER TABLE stage_shards ALTER COLUMN estimated_tokens TYPE bigint")


def downgrade() -> None:
    """Narrow it back to integer; refused while a shard's estimate is past what an integer holds
    (the older release could not store it either, and PostgreSQL would stop at the first one)."""
    REFUSAL.enforce()
    op.execute("ALTER TABLE stage_shards ALTER COLUMN estimated_tokens TYPE integer")
