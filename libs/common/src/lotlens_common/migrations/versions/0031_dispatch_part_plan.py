"""A delivery keeps its part's plan: which lots the part carries, and a cancelled job's head and
unsettled lots as they were when it was scheduled (`dispatch_queue.part_plan`).

The parts were counted when the job completed and each part's lots chosen again at every attempt.
A cancelled job's lots still complete after its announcement, so the boundaries moved between
parts: parts sent later lost lots, or passed the size limit.

A nullable column without a default: PostgreSQL rewrites no row. Rows scheduled before (and by a
dispatcher of the previous release during a rolling upgrade) hold NULL and are built as that
release built them; a dispatcher of the previous release ignores the column.

Revision ID: 0031_dispatch_part_plan
Revises: 0030_lots_awaiting_vision
"""

from __future__ import annotations

from alembic import op

revision = "0031_dispatch_part_plan"
down_revision = "0030_lots_awaiting_vision"


def upgrade() -> None:
    """Add `part_plan` to `dispatch_queue`."""
    op.execute("ALTER TABLE dispatch_queue ADD COLUMN IF NOT EXISTS part_plan jsonb")


def downgrade() -> None:
    """Drop it (open deliveries' parts are then chosen again at each attempt, as before)."""
    op.execute("ALTER TABLE dispatch_queue DROP COLUMN IF EXISTS part_plan")
