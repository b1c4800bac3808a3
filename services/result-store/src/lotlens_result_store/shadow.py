"""The shadow schema a rebuild projects into, and the swap that puts it in place of the live tables.

The shadow tables are copies of the live ones' definitions (`LIKE ... INCLUDING ALL`, so every
migration applied to the live tables is there too), with the live index names and storage
parameters, so the swapped-in tables look exactly like the ones they replace to every later
migration, and store their rows the same way.
"""

from __future__ import annotations

import re
import time

from sqlalchemy import Connection, text

from lotlens_common.db import MIGRATION_LOCK, MIGRATION_LOCK_POLL_S
from lotlens_common.tables import READ_MODELS

SHADOW = "lotlens_rebuild"
RETIRED = "lotlens_retired"
# Where a rebuild has got to: the next offset of each partition, committed with the rows.
CHECKPOINT = f"{SHADOW}.rebuild_offsets"
# The live schema's migration revision when the shadow was made.
REVISION = f"{SHADOW}.schema_revision"
TABLES = tuple(table.name for table in READ_MODELS)


def live_schema(conn: Connection) -> str:
    """The schema the services' connections find the read models in."""
    return str(conn.execute(text("SELECT current_schema()")).scalar_one())


def shadow_exists(conn: Connection) -> bool:
    """Whether a rebuild left a shadow schema behind (it then resumes from its checkpoint)."""
    return bool(conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": SHADOW}).first())


def create_shadow(conn: Connection, live: str) -> None:
    """Empty copies of the live read models in the shadow schema, and an empty checkpoint."""
    hold_migrations(conn)  # the copies and the revision they are recorded at must agree
    conn.execute(text(f"CREATE SCHEMA {SHADOW}"))
    for table in TABLES:
        conn.execute(text(f"CREATE TABLE {SHADOW}.{table} (LIKE {live}.{table} INCLUDING ALL)"))
        _name_indexes_like(conn, live, table)
        _store_like(conn, live, table)
    conn.execute(text(f"CREATE TABLE {CHECKPOINT} (topic text NOT NULL, partition int NOT NULL, "
                      "next_offset bigint NOT NULL, PRIMARY KEY (topic, partition))"))
    conn.execute(text(f"CREATE TABLE {REVISION} AS SELECT version_num FROM {live}.alembic_version"))


def hold_migrations(conn: Connection) -> None:
    """Keep migrations out until the transaction ends (taken first, before the tables' locks, in
    the order a migration takes them).

    Asked again every `MIGRATION_LOCK_POLL_S` rather than waited for: blocked in
    pg_advisory_xact_lock, the transaction held a snapshot that a migrator's concurrent index
    build waits for, and PostgreSQL cancelled one of the two as a deadlock. Between two tries it
    holds none.
    """
    while not conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK}).scalar_one():
        time.sleep(MIGRATION_LOCK_POLL_S)


def schema_changed(conn: Connection, live: str) -> str | None:
    """How the live schema's migration revision moved since the shadow was made (None: it did not).

    The shadow tables copy the live definitions when the rebuild begins: a migration applied
    since (an added column) would be lost at the swap, and the services then failed on a column
    that `alembic_version` says exists. Asked under `hold_migrations`, so none lands between this
    check and the swap.
    """
    if conn.execute(text("SELECT to_regclass(:t)"), {"t": REVISION}).scalar() is None:
        return "unknown (the shadow was made by an older release)"
    made = sorted(conn.execute(text(f"SELECT version_num FROM {REVISION}")).scalars())
    now = sorted(conn.execute(text(f"SELECT version_num FROM {live}.alembic_version")).scalars())
    return None if made == now else f"{', '.join(made)} -> {', '.join(now)}"


def drop_shadow(conn: Connection) -> None:
    """Forget an unfinished rebuild."""
    conn.execute(text(f"DROP SCHEMA IF EXISTS {SHADOW} CASCADE"))


def drop_retired(conn: Connection) -> bool:
    """Drop the tables the last swap retired; whether there were any."""
    existed = bool(conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"),
                                {"s": RETIRED}).first())
    conn.execute(text(f"DROP SCHEMA IF EXISTS {RETIRED} CASCADE"))
    return existed


def use_shadow(conn: Connection) -> None:
    """Point the transaction's unqualified table names at the shadow tables (and nothing else:
    a projection touching any other table fails instead of writing live data)."""
    conn.execute(text(f"SET LOCAL search_path TO {SHADOW}"))


def lock_live(conn: Connection, live: str, timeout_s: float) -> None:
    """Stop every write to the live read models until the transaction ends; reads go on.

    Same table order as the result-store's `lock_read_models`, so the two never deadlock.
    """
    conn.execute(text(f"SET LOCAL lock_timeout = '{int(timeout_s * 1000)}ms'"))
    conn.execute(text(f"LOCK TABLE {', '.join(f'{live}.{t}' for t in TABLES)} IN EXCLUSIVE MODE"))


def swap(conn: Connection, live: str) -> None:
    """Retire the live tables and move the shadow ones in their place (in the caller's transaction)."""
    drop_retired(conn)
    conn.execute(text(f"CREATE SCHEMA {RETIRED}"))
    for table in TABLES:
        conn.execute(text(f"ALTER TABLE {live}.{table} SET SCHEMA {RETIRED}"))
        conn.execute(text(f"ALTER TABLE {SHADOW}.{table} SET SCHEMA {live}"))
    drop_shadow(conn)


def _name_indexes_like(conn: Connection, live: str, table: str) -> None:
    """Rename the shadow table's indexes to the names of the live indexes with the same definition."""
    live_names = {_shape(d): name for name, d in _indexes(conn, live, table)}
    for name, definition in _indexes(conn, SHADOW, table):
        wanted = live_names.get(_shape(definition))
        if wanted and wanted != name:
            conn.execute(text(f'ALTER INDEX {SHADOW}."{name}" RENAME TO "{wanted}"'))


def _store_like(conn: Connection, live: str, table: str) -> None:
    """Give the shadow table the live one's storage parameters, its TOAST table's too.

    `LIKE ... INCLUDING ALL` copies none of them: a rebuilt `lots` was filled to 100% again, and
    the updates of every lot after the swap wrote new entries in all its indexes (`tables.py`).
    """
    row = conn.execute(text("SELECT c.reloptions, t.reloptions FROM pg_class c LEFT JOIN pg_class t "
                            "ON t.oid = c.reltoastrelid WHERE c.oid = to_regclass(:t)"),
                       {"t": f"{live}.{table}"}).one()
    options = [*(row[0] or []), *(f"toast.{option}" for option in row[1] or [])]
    if options:
        conn.execute(text(f"ALTER TABLE {SHADOW}.{table} SET ({', '.join(map(_parameter, options))})"))


def _parameter(option: str) -> str:
    """A `name=value` of `pg_class.reloptions` as `SET (...)` takes it (the value quoted)."""
    name, value = option.split("=", 1)
    escaped = value.replace("'", "''")
    return f"{name} = '{escaped}'"


def _indexes(conn: Connection, schema: str, table: str) -> list[tuple[str, str]]:
    rows = conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :s "
                             "AND tablename = :t"), {"s": schema, "t": table}).all()
    return [(str(name), str(definition)) for name, definition in rows]


def _shape(definition: str) -> str:
    """An index definition without its name and schema."""
    return re.sub(r"INDEX \S+ ON \S+ ", "INDEX ON ", definition)
