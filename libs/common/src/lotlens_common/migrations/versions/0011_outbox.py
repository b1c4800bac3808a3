"""The gateway's transactional outbox: one durable write per submission, relayed to Kafka.

Revision ID: 0011_outbox
Revises: 0002
"""

from __future__ import annotations

from alembic import op

from lotlens_common.tables import outbox

revision = "0011_outbox"
down_revision = "0002"


def upgrade() -> None:
    """Create the `outbox` table and its indexes."""
    outbox.create(op.get_bind(), checkfirst=True)
