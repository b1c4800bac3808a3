"""An Idempotency-Key's reservation says when its request last said it is alive, by the database's
clock (`idempotency_keys.renewed_at`).

A job's reservation was taken over `LOTLENS_IDEMPOTENCY_JOB_LEASE_S` (10 s) after it was made,
measured on each gateway's own clock: an intake slower than the client's timeout (a slow COPY, an
overloaded database) had its key taken by the resend and its write rolled back, and so on for
every resend; nothing was ever written. The request now renews its reservation while it works,
and a reservation is taken over only once it has not been renewed for the lease, both on the
database's clock, so replicas whose clocks disagree agree on it.

A nullable column without a default: PostgreSQL rewrites no row. Rows of the previous release
hold NULL and are judged by `created_at`, as that release judged them; a gateway of the previous
release, during a rolling upgrade, ignores the column (and may take a live request's key over
after the lease, as before).

Revision ID: 0032_idempotency_renewed_at
Revises: 0031_dispatch_part_plan
"""

from __future__ import annotations

from alembic import op

revision = "0032_idempotency_renewed_at"
down_revision = "0031_dispatch_part_plan"


def upgrade() -> None:
    """Add `renewed_at` to `idempotency_keys`."""
    op.execute("ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS renewed_at timestamptz")


def downgrade() -> None:
    """Drop it (a job's reservation is then taken over its lease after it was made, as before)."""
    op.execute("ALTER TABLE idempotency_keys DROP COLUMN IF EXISTS renewed_at")
