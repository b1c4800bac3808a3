"""Advisory locks on PostgreSQL: what holds a shard while one process builds, recovers or collects it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, func, select


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
                conn.execute(select(func.pg_advisory_unlock(func.hashtext(key))))
                conn.commit()


def still_held(conn: Connection) -> bool:
    """Whether the lock's session is alive: a PostgreSQL restart ends it (and frees the lock for
    another process) while its holder works on."""
    try:
        conn.execute(select(1))
        conn.commit()
        return True
    except Exception:  # any failure means the session, and the lock with it, may be gone
        return False
