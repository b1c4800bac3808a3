"""A lot failed at translation remembers whether its vision result is still to be projected.

Topics are read in no global order: a lot's translation-stage `LotFailed` can be projected before
its `VisionCompleted`. The job then settled and was announced without that vision answer's usage
(paid for), which no later event adds to the job; a rebuild reading vision first summed it. The
result-store now waits for such a lot's vision result as it already waits for a completed lot's
(`lots.awaiting_vision`, set by the failure, cleared by the vision result).

A column with a constant default: PostgreSQL rewrites no row. A result-store of the previous
release, running during a rolling upgrade, neither reads nor writes it: a lot it fails holds
false, which settles as that release did; a vision result it projects after this release failed
the lot leaves the flag set, so settlement also takes the vision usage it brought as its coming
(`completion._WITHOUT_VISION_USAGE`; one without usage: docs/RUNBOOK.md, "A job that does not finish").

Revision ID: 0030_lots_awaiting_vision
Revises: 0029_idempotency_signature
"""

from __future__ import annotations

from alembic import op

revision = "0030_lots_awaiting_vision"
down_revision = "0029_idempotency_signature"


def upgrade() -> None:
    """Add `awaiting_vision` to `lots`."""
    op.execute("ALTER TABLE lots ADD COLUMN IF NOT EXISTS awaiting_vision boolean NOT NULL DEFAULT false")


def downgrade() -> None:
    """Drop it (a job may then settle before a translation-failed lot's vision result again)."""
    op.execute("ALTER TABLE lots DROP COLUMN IF EXISTS awaiting_vision")
