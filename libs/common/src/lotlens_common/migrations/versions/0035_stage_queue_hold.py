"""Each stage's hold after OpenAI's enqueued-token queue for its model refused a batch, one row a stage.

The hold (`stage/core/queue_hold.py`) lived in the process: only the replica that collected the
refused batch held back, and every other replica checked images, uploaded up to 198 MB and created
a batch refused the same way, until the queue drained. Kept here, every replica reads it before
building.

A new table: no row of an existing one is touched.

Downgrade: drops it. Forgotten, as the older release never kept it: a hold in force ends (its
pods hold back again after the next refusal each of them collects).

Revision ID: 0035_stage_queue_hold
Revises: 0034_stage_lots_work_ahead
"""

from __future__ import annotations

from alembic import op

revision = "0035_stage_queue_hold"
down_revision = "0034_stage_lots_work_ahead"


def upgrade() -> None:
    """Create `stage_queue_holds`."""
    op.execute("""
        CREATE TABLE IF NOT EXISTS stage_queue_holds (
            stage text PRIMARY KEY,
            refusals integer NOT NULL,
            refused_at timestamptz NOT NULL,
            held_until timestamptz NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now())""")


def downgrade() -> None:
    """Drop it (this module's docstring says what that forgets)."""
    op.execute("DROP TABLE IF EXISTS stage_queue_holds")
