"""Advisory locks on PostgreSQL: what holds a shard while one process builds, recovers or collects it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import DBAPIError, PendingRollbackError


@contextmanager
def exclusive(engine: Engine, key: str, held: dict[str, Connection] | None = None) -> Iterator[bool]:
    """Hold a session advisory lock on `key` while inside; yields False if another process has it.

    The lock dies with the connection, so a killed process never leaves a shard locked; the
    connection is put in `held` meanwhile, for `still_held`.
    """
    with engine.connect() as conn:
        got = bool(conn.execute(select(func.pg_try_advisory_lock(func.hashtext(key)))).scalar())
        conn.commit()
        if got and held is not None:
            held[key] = conn
        try:
            yield got
        finally:
            if held is not None:
                held.pop(key, None)
            if got:
                _unlock(conn, key)


def _unlock(conn: Connection, key: str) -> None:
    """Release the lock; a session that died took it along, and its error must not replace the
    builder's own (a `LostShardLock` surfaced as `PendingRollbackError` and aborted the round)."""
    try:
        conn.execute(select(func.pg_advisory_unlock(func.hashtext(key))))
        conn.commit()
    except (DBAPIError, PendingRollbackError):
        if not conn.invalidated:
            raise  # the session lives, so the lock may too: never hide that
        conn.rollback()  # lets the pool take the dead connection back and replace it


def still_held(conn: Connection) -> bool:
    """Whether the lock's session is alive: a PostgreSQL restart ends it (and frees the lock for
    another process) while its holder works on."""
    try:
        conn.execute(select(1))
        conn.commit()
        return True
    except Exception:  # any failure means the session, and the lock with it, may be gone
        conn.rollback()
        return False
