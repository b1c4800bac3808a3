"""Alembic environment: always run online, on the connection `db.migrate` hands over.

Each migration commits on its own: one that builds an index concurrently must commit what came
before it (`autocommit_block`), and a failed one leaves the earlier ones applied and recorded, so
the next run starts from it.
"""

from __future__ import annotations

from alembic import context

from lotlens_common.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
