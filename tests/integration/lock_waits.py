"""Waiting until another session's statement waits for a lock, for tests about what it does then.

A fixed sleep let a slow machine start that statement after the lock was gone: it then ran at
once, and the test passed without the wait it is about."""

from __future__ import annotations

from sqlalchemy import Engine, text

from tests.polling import wait_for

_WAITING = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE :query AND datname = current_database()")
# On one table (resolved in the engine's search path), whatever the database's other sessions wait for.
_WAITING_ON = text("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = CAST(:table AS regclass)")


def waiting_on_a_lock(engine: Engine, query: str = "") -> int:
    """How many statements starting with `query` wait on a lock (row, table or advisory) in this
    test's database (0: none)."""
    with engine.connect() as conn:
        return int(conn.execute(_WAITING, {"query": f"{query}%"}).scalar_one())


def wait_for_a_lock_wait(engine: Engine, what: str, table: str | None = None) -> None:
    """Return once a statement in this test's database waits for a lock, or, given `table`, for a
    lock on that table."""
    def waiting() -> int:
        if table is None:
            return waiting_on_a_lock(engine)
        with engine.connect() as conn:
            return int(conn.execute(_WAITING_ON, {"table": table}).scalar_one())

    wait_for(waiting, f"{what} to wait for a lock", timeout_s=10, every_s=0.02)
