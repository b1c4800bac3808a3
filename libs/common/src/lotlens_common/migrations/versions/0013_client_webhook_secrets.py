"""Each client's Standard Webhooks signing secrets (`whsec_…`), rotatable with an overlap.

Revision ID: 0013_client_webhook_secrets
Revises: 0011_outbox
"""

from __future__ import annotations

from alembic import op

from lotlens_common.tables import client_webhook_secrets

revision = "0013_client_webhook_secrets"
down_revision = "0011_outbox"


def upgrade() -> None:
    """Create the table and its one-current-secret index (0001's create_all may have made both)."""
    client_webhook_secrets.create(op.get_bind(), checkfirst=True)
