"""An Idempotency-Key's row keeps the SHA-256 of the `X-Signature` header its request carried.

A job resent while intake is busy is not parsed (an intake slot bounds that memory), so its
replay was found by key and raw bytes among every client's rows: a body signed by the header
alone names no client, and client B sending client A's exact bytes under the same key was
answered A's 201 and job id, with no job made for B. The busy-path replay now also needs the
header the accepted request carried (`header_signature_sha256`; the SHA-256 of "" without one).

A nullable column with no default: PostgreSQL rewrites no row, and gateways of the previous
release, running during a rolling upgrade, neither read nor write it. Their rows hold NULL,
which no request matches: a resend of such a job while intake is busy gets 503, as before the
busy-path replay (its job stands).

Revision ID: 0029_idempotency_signature
Revises: 0028_stage_shard_quota_pause
"""

from __future__ import annotations

from alembic import op

revision = "0029_idempotency_signature"
down_revision = "0028_stage_shard_quota_pause"


def upgrade() -> None:
    """Add `header_signature_sha256` to `idempotency_keys`."""
    op.execute("ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS header_signature_sha256 text")


def downgrade() -> None:
    """Drop it (a resend while intake is busy then gets 503 until its key expires)."""
    op.execute("ALTER TABLE idempotency_keys DROP COLUMN IF EXISTS header_signature_sha256")
