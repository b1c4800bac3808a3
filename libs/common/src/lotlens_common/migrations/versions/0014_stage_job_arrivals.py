"""Each stage counts a job's arrived lots as they are inserted (`stage_jobs.arrived`).

Revision ID: 0014_stage_job_arrivals
Revises: 0015_dispatch_trace
"""

from __future__ import annotations

from alembic import op

revision = "0014_stage_job_arrivals"
down_revision = "0015_dispatch_trace"


def upgrade() -> None:
    """Add the counter and count the lots already in the work table (a database the old 0001's
    `create_all` made may have the column). A lot inserted by an older release during the upgrade
    goes uncounted: its job is then sent by the batching window instead of as soon as it is complete."""
    op.execute("ALTER TABLE stage_jobs ADD COLUMN IF NOT EXISTS arrived integer NOT NULL DEFAULT 0")
    op.execute("""
        INSERT INTO stage_jobs AS j (stage, job_id, arrived)
        SELECT stage, job_id, count(*) FROM stage_lots GROUP BY stage, job_id
        ON CONFLICT (stage, job_id) DO UPDATE SET arrived = EXCLUDED.arrived""")


def downgrade() -> None:
    """Drop the counter (the older release counts a job's lots each time instead). The rows the
    upgrade added to `stage_jobs` stay: the older release writes such rows itself."""
    op.execute("ALTER TABLE stage_jobs DROP COLUMN IF EXISTS arrived")
