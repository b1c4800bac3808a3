"""Each client's Standard Webhooks signing secrets (`whsec_…`), rotatable with an overlap.

Frozen: the table as `tables.py` declared it when this revision was written (commit 3facbd5).
Idempotent, as it was: a database made by the old 0001 (`create_all`) may have it already.

Downgrade: refused while the table holds a secret. The older release has nowhere to keep them and
nothing could make them again: the gateway would make new ones after upgrading again, and every
client's receiver would reject its webhooks. Save the rows to a file and delete them, downgrade;
after upgrading again, put them back in place of the secrets the gateways made as they started
(README, "Stepping the schema back", gives the commands).

Revision ID: 0013_client_webhook_secrets
Revises: 0011_outbox
"""

from __future__ import annotations

from alembic import op

from lotlens_common.migrations.refusals import Refusal

revision = "0013_client_webhook_secrets"
down_revision = "0011_outbox"

REFUSAL = Refusal(
    ("client_webhook_secrets",), "SELECT count(*) FROM client_webhook_secrets",
    "client_webhook_secrets holds {n} webhook signing secret(s), which the release before "
    "0013_client_webhook_secrets has nowhere to keep and nothing could make again: save them to a file "
    "and delete them (README, \"Stepping the schema back\"), downgrade again, and put them back after "
    "upgrading again")


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


def downgrade() -> None:
    """Drop the table; refused while it holds a secret (this module's docstring)."""
    REFUSAL.enforce()
    op.execute("DROP TABLE IF EXISTS client_webhook_secrets")
