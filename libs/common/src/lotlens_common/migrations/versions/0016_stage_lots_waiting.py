"""The stage's waiting-lots index holds waiting lots only, in the order they are claimed.

Revision ID: 0016_stage_lots_waiting
Revises: 0014_stage_job_arrivals
"""

from __future__ import annotations

from alembic import op

revision = "0016_stage_lots_waiting"
down_revision = "0014_stage_job_arrivals"


def upgrade() -> None:
    """Replace the (stage, status, job_id) index by a partial one over waiting lots.

    Every claim and every settled lot moves a row out of `waiting`; the full index took a new
    entry for each of those moves, and the claim sorted the job's waiting lots on every shard.
    The partial index takes entries only for waiting lots and hands them out in claim order.
    """
    op.execute("""CREATE INDEX IF NOT EXISTS ix_stage_lots_waiting_order
                  ON stage_lots (stage, job_id, enqueued_at, lot_id) WHERE status = 'waiting'""")
    op.execute("DROP INDEX IF EXISTS ix_stage_lots_waiting")
