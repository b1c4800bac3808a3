"""The test harness drops its own databases even while autovacuum works in them (a CI run failed
on `DROP DATABASE … WITH (FORCE)`: "must be a member of the role whose process is being terminated")."""

from __future__ import annotations

import time

import psycopg2  # type: ignore[import-untyped]
import pytest
from sqlalchemy import make_url

from tests.conftest import Infra, new_id
from tests.databases import drop_database

pytestmark = pytest.mark.integration

# Every dead row is due for vacuum, and the vacuum crawls (cost limit 1, 100 ms naps), so the
# worker that comes for it stays in the database long enough to be there when the drop runs.
_SLOW_VACUUM_BAIT = """
CREATE TABLE bait (n int) WITH (autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0,
                                autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1);
INSERT INTO bait SELECT generate_series(1, 200000);
DELETE FROM bait;
"""


def _sessions_in(cur: object, name: str) -> int:
    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,))  # type: ignore[attr-defined]
    return int(cur.fetchone()[0])  # type: ignore[attr-defined]


def test_a_database_is_dropped_while_autovacuum_and_our_own_sessions_are_in_it(infra: Infra) -> None:
    url = make_url(infra.database_url).set(drivername="postgresql")
    name = new_id("lotlens_dropme_")
    admin = psycopg2.connect(url.render_as_string(hide_password=False))
    admin.autocommit = True
    cur = admin.cursor()
    cur.execute(f'CREATE DATABASE "{name}"')
    ours = psycopg2.connect(url.set(database=name).render_as_string(hide_password=False))
    try:
        ours.autocommit = True
        with ours.cursor() as own:
            own.execute(_SLOW_VACUUM_BAIT)
        deadline = time.monotonic() + 120
        while _sessions_in(cur, name) < 2:  # ours and the autovacuum worker (its role hidden from us)
            assert time.monotonic() < deadline, "autovacuum never came to the database"
            time.sleep(0.2)

        drop_database(cur, name)

        cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
        assert cur.fetchone()[0] == 0
        assert ours.closed or _is_gone(ours)
    finally:
        ours.close()
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def _is_gone(conn: object) -> bool:
    try:
        with conn.cursor() as c:  # type: ignore[attr-defined]
            c.execute("SELECT 1")
    except psycopg2.OperationalError:
        return True
    return False
