"""The path a rollback takes: the schema stepped down one revision at a time, as `lotlens-admin db
downgrade -1` does, from the head to an empty database and back.

On a database of its own, created and dropped here: every revision is upgraded one at a time and
the schema read after each; then, from the head down, each revision is undone (the schema must be
its parent's, as that parent's own upgrade left it) down to the base; then each is upgraded again
(the schema must be as its first upgrade left it), the head's last. A downgrade missing, left
empty, or leaving a column, index, constraint, trigger, function or storage parameter behind or
changed fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, make_url, text

from lotlens_common.db import MIGRATIONS, make_engine, migrate
from lotlens_common.migrate import database_revisions
from lotlens_common.settings import DatabaseSettings
from tests.conftest import Infra, new_id
from tests.databases import connect, drop_database

pytestmark = pytest.mark.integration

BASE = "base"
# The schema as PostgreSQL's catalogue holds it (not `information_schema`, ten times slower to read,
# and read about a hundred times here): each part a set of rows, the table's name first.
_IN_SCHEMA = "relnamespace = current_schema()::regnamespace"
CATALOGUE = {
    # With its storage parameters (`lots`' fillfactor).
    "tables": f"""SELECT relname, relkind, reloptions::text FROM pg_class
                   WHERE {_IN_SCHEMA} AND relkind IN ('r', 'p', 'v', 'm')""",
    # With each column's place among the table's live ones: a column dropped and added again ends up
    # at the end of its table, where a straight upgrade may not have put it.
    "columns": f"""SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                          pg_get_expr(d.adbin, d.adrelid), a.attidentity,
                          row_number() OVER (PARTITION BY c.relname ORDER BY a.attnum)
                     FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                     LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                    WHERE c.{_IN_SCHEMA} AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped""",
    "indexes": f"""SELECT c.relname, i.relname, pg_get_indexdef(i.oid), x.indisvalid
                     FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                     JOIN pg_class c ON c.oid = x.indrelid WHERE c.{_IN_SCHEMA}""",
    "constraints": """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
                        FROM pg_constraint WHERE connamespace = current_schema()::regnamespace""",
    "triggers": f"""SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
                      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                     WHERE NOT t.tgisinternal AND c.{_IN_SCHEMA}""",
    "functions": """SELECT proname, pg_get_function_identity_arguments(oid), pg_get_functiondef(oid)
                      FROM pg_proc WHERE pronamespace = current_schema()::regnamespace""",
    "sequences": f"""SELECT c.relname, s.seqtypid::regtype::text, s.seqstart, s.seqincrement
                       FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid WHERE c.{_IN_SCHEMA}""",
}
Schema = dict[str, set[tuple[Any, ...]]]


@pytest.fixture()
def scratch(infra: Infra) -> Iterator[Engine]:
    """An engine on an empty database of this test's own, dropped afterwards."""
    name = new_id("lotlens_downgrades_")
    admin = connect(infra.database_url)
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        url = make_url(infra.database_url).set(database=name).render_as_string(hide_password=False)
        engine = make_engine(DatabaseSettings(DATABASE_URL=url), "tests", pool_size=2)
        try:
            yield engine
        finally:
            engine.dispose()
            with admin.cursor() as cur:
                drop_database(cur, name)
    finally:
        admin.close()


def revisions() -> list[str]:
    """Every revision, oldest first."""
    return [script.revision for script in reversed(list(ScriptDirectory(str(MIGRATIONS)).walk_revisions()))]


def schema(engine: Engine) -> Schema:
    """The schema's tables, columns (type, nullability, default, place), indexes, constraints,
    triggers, functions and sequences; Alembic's own `alembic_version` left out (a downgrade to
    the base keeps it, empty)."""
    with engine.connect() as conn:
        return {part: {tuple(row) for row in conn.execute(text(query)) if row[0] != "alembic_version"}
                for part, query in CATALOGUE.items()}


def assert_same(found: Schema, expected: Schema, when: str) -> None:
    """Fail naming what differs, part by part."""
    differences = {part: {"missing": sorted(map(str, expected[part] - found[part])),
                          "extra": sorted(map(str, found[part] - expected[part]))}
                   for part in expected if found[part] != expected[part]}
    assert not differences, f"{when}: {differences}"


def test_the_schema_steps_down_to_the_base_and_up_again_each_step_as_a_straight_upgrade_left_it(
        scratch: Engine) -> None:
    order = revisions()
    upgraded = {BASE: schema(scratch)}
    for revision in order:
        migrate(scratch, revision)
        upgraded[revision] = schema(scratch)
    below = dict(zip(order, [BASE, *order], strict=False))
    for revision in reversed(order):
        migrate(scratch, "-1", downgrade=True)
        assert_same(schema(scratch), upgraded[below[revision]], f"{revision} stepped down")
    assert database_revisions(scratch) == set()
    for revision in order:
        migrate(scratch, "+1")
        assert_same(schema(scratch), upgraded[revision], f"{revision} upgraded again after its downgrade")
    assert database_revisions(scratch) == {order[-1]}
