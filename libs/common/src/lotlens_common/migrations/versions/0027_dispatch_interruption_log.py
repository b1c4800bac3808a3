"""Two things a delivery's row keeps about its interruptions.

`unsent_interruptions`: of `interruptions`, those of attempts known unsent whose failure could not
be marked (handed back, their attempt number given back). The schedule subtracts the other
interruptions from the attempt number, as attempts they took; subtracting these too, a delivery
handed back so once made its next attempt as "attempt 0" and was given up after one POST.

`unpublished_interruptions`: the interrupted attempts (`[{"attempt": n, "at": time}]`) whose
records are not known to be published yet. Counted and cleared in the claim's one write, the
record lived only in the claiming instance's memory: killed before publishing it, the attempt
was missing from the delivery's history for good.

Revision ID: 0027_dispatch_interruption_log
Revises: 0026_stage_shard_release
"""

from __future__ import annotations

from alembic import op

revision = "0027_dispatch_interruption_log"
down_revision = "0026_stage_shard_release"


def upgrade() -> None:
    """Add both with constant defaults (PostgreSQL rewrites no row)."""
    op.execute("ALTER TABLE dispatch_queue ADD COLUMN IF NOT EXISTS unsent_interruptions integer "
               "NOT NULL DEFAULT 0")
    op.execute("ALTER TABLE dispatch_queue ADD COLUMN IF NOT EXISTS unpublished_interruptions jsonb "
               "NOT NULL DEFAULT '[]'::jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE dispatch_queue DROP COLUMN IF EXISTS unpublished_interruptions")
    op.execute("ALTER TABLE dispatch_queue DROP COLUMN IF EXISTS unsent_interruptions")
