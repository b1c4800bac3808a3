"""The test harness drops its own databases even while autovacuum works in them (a CI run failed
on `DROP DATABASE … WITH (FORCE)`: "must be a member of the role whose process is being terminated")."""

from __future__ import annotations

from typing import Any

import psycopg2
import pytest

from tests.conftest import Infra, new_id
from tests.databases import connect, drop_database
from tests.polling import wait_for

pytestmark = pytest.mark.integration

# Every dead row is due for vacuum, and the vacuum crawls (cost limit 1, 100 ms naps), so the
# worker that comes for it stays in the database long enough to be there when the drop runs.
_SLOW_VACUUM_BAIT = """
CREATE TABLE bait (n int) WITH (autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0,
                                autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1);
INSERT INTO bait SELECT generate_series(1, 200000);
DELETE FROM bait;
"""


def _sessions_in(cur: Any, name: str) -> int:
    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,))
    return int(cur.fetchone()[0])


def test_a_database_is_dropped_while_autovacuum_and_our_own_sessions_are_in_it(infra: Infra) -> None:
    name = new_id("lotlens_dropme_")
    admin = connect(infra.database_url)
    cur = admin.cursor()
    cur.execute(f'CREATE DATABASE "{name}"')
    ours = connect(infra.database_url, name)
    try:
        with ours.cursor() as own:
            own.execute(_SLOW_VACUUM_BAIT)
        # Ours and the autovacuum worker (its role hidden from us).
        wait_for(lambda: _sessions_in(cur, name) >= 2, "autovacuum to come to the database", timeout_s=120,
                 every_s=0.2)

        drop_database(cur, name)

        cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
        assert cur.fetchone()[0] == 0
        assert ours.closed or _is_gone(ours)
    finally:
        ours.close()
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def _is_gone(conn: Any) -> bool:
    try:
        with conn.cursor() as c:
            c.execute("SELECT 1")
    except psycopg2.OperationalError:
        return True
    return False
