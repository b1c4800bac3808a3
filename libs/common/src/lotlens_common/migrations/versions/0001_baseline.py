"""Baseline schema: the read models and the services' work tables.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from lotlens_common.tables import metadata

revision = "0001"
down_revision = None


def upgrade() -> None:
    """Create every table as `tables.py` declares it at this baseline; later revisions use ops."""
    metadata.create_all(op.get_bind())
