"""The Alembic head is the schema the SQLAlchemy models describe (tests that build tables with
`metadata.create_all` would otherwise pass against a schema production never gets)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from lotlens_common.tables import metadata

pytestmark = pytest.mark.integration


def test_the_migrated_database_has_exactly_the_models_tables_columns_and_indexes(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    # alembic_version is Alembic's own table, not a model.
    differences = [d for d in differences
                   if not (d[0] == "remove_table" and d[1].name == "alembic_version")]
    assert differences == [], "write a migration (or fix the model): " + repr(differences)
