"""Indexes on big tables built without blocking their writes, for the revisions that add them.

`CREATE INDEX CONCURRENTLY` cannot run in a transaction, so it runs in Alembic's autocommit block
(the runner holds the migrators' lock per session). A build that was interrupted (a killed Job, a
cancelled statement) leaves an invalid index under the name, which `IF NOT EXISTS` would take as
done: it is dropped and built again. Builds and drops run without the runner's lock timeout: that
limit keeps DDL waiting for a table lock from queueing intake and the stages behind it, but a
concurrent build's or drop's waits (for older transactions, for every transaction holding a lock
on the table, and its SHARE UPDATE EXCLUSIVE lock) queue no reads or writes. Bounded at 5 s, any
longer transaction (the dispatcher streaming a big job's lots) made a build give way and start
again until the migrate Job failed; bounded at 2 s, a drop gave way to any reader of the table
open that long (0025's upgrade, the downgrades of 0020-0025).

Revisions may import this module and nothing else of LotLens: it is how to build, not what (each
revision writes its columns out), so it serves old revisions unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

# name -> (columns or expressions, the partial index's WHERE or None)
Indexes = Mapping[str, tuple[Sequence[Any], Any]]


def build(table: str, indexes: Indexes) -> None:
    """Build each index on `table` concurrently, an invalid leftover of the name dropped first."""
    with op.get_context().autocommit_block(), _without_lock_timeout():
        for name, (columns, where) in indexes.items():
            if _invalid(name):
                op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
            op.create_index(name, table, list(columns), postgresql_where=where,
                            postgresql_concurrently=True, if_not_exists=True)


def drop(table: str, names: Iterable[str]) -> None:
    """Drop the indexes, concurrently too."""
    with op.get_context().autocommit_block(), _without_lock_timeout():
        for name in names:
            op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)


@contextlib.contextmanager
def _without_lock_timeout() -> Iterator[None]:
    """The session's lock timeout lifted meanwhile (it is the runner's, set per session)."""
    bind = op.get_bind()
    limit = bind.execute(sa.text("SELECT current_setting('lock_timeout')")).scalar_one()
    bind.execute(sa.text("SET lock_timeout = 0"))
    try:
        yield
    finally:
        with contextlib.suppress(sa.exc.SQLAlchemyError):  # a session gone ends with its setting
            bind.execute(sa.text("SELECT set_config('lock_timeout', :t, false)"), {"t": limit})


def _invalid(name: str) -> bool:
    """An index of that name exists in the schema migrated (the search path's) and is not valid."""
    valid = op.get_bind().execute(
        sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"), {"n": name}).scalar()
    return valid is False
