"""Dropping a database that tests or the bench created, whoever is still connected to it."""

from __future__ import annotations

import time
from typing import Any

import psycopg2
from sqlalchemy import make_url

_END_OWN_SESSIONS = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
 WHERE datname = %s AND usename = current_user AND pid <> pg_backend_pid()
"""


def connect(url: str, database: str | None = None) -> Any:
    """An autocommit psycopg2 connection from the tests' SQLAlchemy URL (to `database` if given)."""
    target = make_url(url).set(drivername="postgresql")
    if database is not None:
        target = target.set(database=database)
    conn = psycopg2.connect(target.render_as_string(hide_password=False))
    conn.autocommit = True
    return conn


def drop_database(cur: Any, name: str, timeout_s: float = 60.0) -> None:
    """DROP DATABASE `name` on an autocommit psycopg2 cursor.

    Not `WITH (FORCE)`: FORCE refuses outright while an autovacuum worker is in the database (a
    process of no role we may signal), and a database the test just filled is where autovacuum
    goes next. A plain DROP makes autovacuum workers leave by itself, so only this role's own
    sessions are ended first; a pool that reconnects in between is ended on the next round.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        cur.execute(_END_OWN_SESSIONS, (name,))
        try:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            return
        except psycopg2.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
