"""Reading a migrated schema back: its differences from the models, its catalogue, and stamping a
schema made the way the old baseline made it (`create_all` of the models)."""

from __future__ import annotations

import re
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text

from lotlens_common.db import MIGRATIONS
from lotlens_common.tables import metadata

# The schema's own catalogue, in the search path's first schema; the schema's name taken out of
# definitions, so two schemas compare.
CATALOGUE = {
    "columns": """SELECT table_name, column_name, data_type, is_nullable, column_default,
                         identity_generation
                    FROM information_schema.columns WHERE table_schema = current_schema()""",
    "storage": """SELECT relname, reloptions::text FROM pg_class
                   WHERE relnamespace = current_schema()::regnamespace AND reloptions IS NOT NULL""",
    "indexes": """SELECT tablename, indexname, replace(indexdef, current_schema() || '.', '')
                    FROM pg_indexes WHERE schemaname = current_schema()""",
    "constraints": """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
                        FROM pg_constraint WHERE connamespace = current_schema()::regnamespace""",
    "triggers": """SELECT tgrelid::regclass::text, tgname,
                          replace(pg_get_triggerdef(t.oid), current_schema() || '.', '')
                     FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                    WHERE NOT tgisinternal AND c.relnamespace = current_schema()::regnamespace""",
}
# `create_all` writes an integer default as a string cast ('0'::bigint), a migration as 0: one value.
_CAST_NUMBER = re.compile(r"^'(-?\d+)'::(?:integer|bigint)$")


def model_differences(engine: Engine) -> list[Any]:
    """What Alembic's autogenerate would change to make the schema the models' (types and
    server defaults compared too); empty when a revision exists for every change to `tables.py`."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                         "compare_server_default": True})
        differences = compare_metadata(context, metadata)
    # alembic_version is Alembic's own table, not a model.
    return [d for d in differences if not (d[0] == "remove_table" and d[1].name == "alembic_version")]


def catalogue(engine: Engine) -> dict[str, set[tuple[Any, ...]]]:
    """The schema's columns, storage parameters, indexes, constraints and triggers, as sets of rows."""
    with engine.connect() as conn:
        found = {part: {tuple(row) for row in conn.execute(text(query))} for part, query in CATALOGUE.items()}
    found["columns"] = {(*row[:4], _CAST_NUMBER.sub(r"\1", row[4] or ""), row[5]) for row in found["columns"]}
    return found


def stamp(engine: Engine, revision: str) -> None:
    """Record the schema as being at `revision` without running anything."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.stamp(config, revision)
        conn.commit()
