"""The Alembic head is the schema the SQLAlchemy models describe.

The head is reached by running every revision from the frozen baseline (0001 never reads
`tables.py`): a change to `tables.py` that comes without its migration shows here as a difference.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from tests.integration.schema_support import model_differences

pytestmark = pytest.mark.integration


def test_the_migrated_database_has_exactly_the_models_tables_columns_and_indexes(engine: Engine) -> None:
    differences = model_differences(engine)
    assert differences == [], "write a migration (or fix the model): " + repr(differences)
