"""A rebuilt read model stores its rows as the live one did: the shadow tables a rebuild projects
into, and swaps in, carry the live tables' storage parameters (`lots`' fillfactor, `tables.py`)."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, Engine, text

from lotlens_common.tables import lots
from lotlens_result_store.shadow import RETIRED, SHADOW, TABLES, create_shadow, live_schema, swap

pytestmark = pytest.mark.integration

# What `tables.py` declares for `lots`, as PostgreSQL lists it.
LOTS_STORAGE = [f"{name}={value}" for name, value in lots.dialect_options["postgresql"]["with"].items()]


def _storage(conn: Connection, schema: str, table: str) -> list[str] | None:
    return conn.execute(text("SELECT reloptions FROM pg_class WHERE oid = to_regclass(:t)"),
                        {"t": f"{schema}.{table}"}).scalar()


def test_the_migrated_lots_table_fills_its_pages_as_the_model_says(own_engine: Engine) -> None:
    assert LOTS_STORAGE == ["fillfactor=25"]
    with own_engine.connect() as conn:
        assert _storage(conn, live_schema(conn), "lots") == LOTS_STORAGE


def test_the_shadow_tables_and_the_tables_swapped_in_keep_the_live_storage_parameters(
        own_engine: Engine) -> None:
    with own_engine.begin() as conn:
        live = live_schema(conn)
        # Another read model with a parameter of its own, and one of a TOAST table, come along too.
        conn.execute(text(f"ALTER TABLE {live}.descriptions SET (autovacuum_vacuum_scale_factor = 0.05, "
                          "toast.autovacuum_enabled = false)"))
        before = {table: _storage(conn, live, table) for table in TABLES}
        create_shadow(conn, live)
        assert {table: _storage(conn, SHADOW, table) for table in TABLES} == before
        toast = conn.execute(text("SELECT t.reloptions FROM pg_class c JOIN pg_class t "
                                  "ON t.oid = c.reltoastrelid WHERE c.oid = to_regclass(:t)"),
                             {"t": f"{SHADOW}.descriptions"}).scalar()
        assert toast == ["autovacuum_enabled=false"]
        swap(conn, live)
        assert {table: _storage(conn, live, table) for table in TABLES} == before
        assert _storage(conn, RETIRED, "lots") == _storage(conn, live, "lots") == LOTS_STORAGE
