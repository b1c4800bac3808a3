"""A shard's estimated tokens as bigint: 50,000 lots of 17 images are 2.3 billion tokens by
o4-mini's estimate, past a 32-bit integer, and the claim failed every round, stalling the stage.

Revision ID: 0017_shard_tokens_bigint
Revises: 0016_stage_places
"""

from __future__ import annotations

from alembic import op

revision = "0017_shard_tokens_bigint"
down_revision = "0016_stage_places"


def upgrade() -> None:
    """Widen the column (stage_shards holds a row per batch sent: rewriting it is quick)."""
    op.execute("ALTER TABLE stage_shards ALTER COLUMN estimated_tokens TYPE bigint")

