"""A PostgreSQL that stalls rather than fails, made from a second session: a table held locked in
an open transaction (an operator's manual fix, a long migration), or a service's sessions ended
by `pg_terminate_backend` (an operator ending a runaway query, a failover)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.databases import connect


@contextmanager
def tables_locked(database_url: str, *tables: str) -> Iterator[None]:
    """Hold `tables` in ACCESS EXCLUSIVE mode until exit: every statement on them queues behind."""
    conn = connect(database_url)
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        conn.rollback()
        conn.close()


def waiting_on_locks(database_url: str, application_name: str) -> int:
    """Sessions of `application_name` waiting for a lock right now."""
    conn = connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                        "AND wait_event_type = 'Lock'", (application_name,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def terminate_sessions(database_url: str, application_name: str) -> int:
    """`pg_terminate_backend` every session of `application_name`; how many there were."""
    conn = connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = %s AND pid <> pg_backend_pid()", (application_name,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()
