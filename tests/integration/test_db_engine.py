"""A service's connections carry its name to PostgreSQL, where an SRE looks for it (pg_stat_activity)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from lotlens_common.db import make_engine
from lotlens_common.settings import DatabaseSettings
from tests.conftest import Infra

pytestmark = pytest.mark.integration


def _application_name(database_url: str) -> str:
    engine = make_engine(DatabaseSettings(DATABASE_URL=database_url), "result-store", autocommit=True)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            # What other sessions see, not only the session's own setting.
            return str(conn.execute(text("SELECT application_name FROM pg_stat_activity WHERE pid = :pid"),
                                    {"pid": pid}).scalar_one())
    finally:
        engine.dispose()


def test_connections_are_named_after_the_service(infra: Infra) -> None:
    assert _application_name(infra.database_url) == "lotlens-result-store"


def test_an_application_name_in_the_database_url_is_kept(infra: Infra) -> None:
    separator = "&" if "?" in infra.database_url else "?"
    named = f"{infra.database_url}{separator}application_name=eu-west-store"
    assert _application_name(named) == "eu-west-store"
