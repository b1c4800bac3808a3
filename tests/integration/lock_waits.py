"""Waiting until another session's statement waits for a lock, for tests about what it does then.

A fixed sleep let a slow machine start that statement after the lock was gone: it then ran at
once, and the test passed without the wait it is about."""

from __future__ import annotations

import time

from sqlalchemy import Engine, text

_WAITING = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")


def wait_for_a_lock_wait(engine: Engine, what: str, timeout_s: float = 10.0) -> None:
    """Return once a statement in this test's database waits for a lock (row, table or advisory)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(_WAITING).scalar_one():
                return
        time.sleep(0.02)
    raise AssertionError(f"{what} never waited for a lock")
