"""Each client's Standard Webhooks signing secrets (`whsec_…`), rotatable with an overlap.

Frozen: the table as `tables.py` declared it when this revision was written (commit 3facbd5).
Idempotent, as it was: a database made by the old 0001 (`create_all`) may have it already.

Revision ID: 0013_client_webhook_secrets
Revises: 0011_outbox
"""

from __future__ import annotations

from alembic import op

revision = "0013_client_webhook_secrets"
down_revision = "0011_outbox"


def upgrade() -> None:
    """Create the table and its one-current-secret index."""
    op.execute("""
        CREATE TABLE IF NOT EXISTS client_webhook_secrets (
            client_id text NOT NULL,
            secret text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz,
            PRIMARY KEY (client_id, secret))""")
    op.execute("CREATE UNIQUE INDEX IF NOT EXISTS ux_client_webhook_secrets_current "
               "ON client_webhook_secrets (client_id) WHERE expires_at IS NULL")
