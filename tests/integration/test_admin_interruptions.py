"""`lotlens-admin` stopped by its operator (Ctrl-C) or by the reader of its output (`| head`):
one line or none on stderr, a documented exit status, and nothing half done (README, "Operations")."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Connection, Engine, text

from lotlens_common import webhook_secrets
from lotlens_common.clock import utc_now
from tests.conftest import ROOT, Infra, new_id
from tests.integration.admin_support import admin_env
from tests.polling import wait_for

pytestmark = pytest.mark.integration


# How long a command waits for a lock here (the operator's default is 10 s): short, as only the
# line and the exit status are checked. The Ctrl-C test waits longer: its signal must land within
# the wait, and on a loaded machine 1.5 s passed before it was sent.
ADMIN_LOCK_TIMEOUT_MS = "1500"
CTRL_C_LOCK_TIMEOUT_MS = "6000"


def _admin(infra: Infra, *argv: str, lock_timeout_ms: str = ADMIN_LOCK_TIMEOUT_MS) -> subprocess.Popen[str]:
    env = {**admin_env(infra.kafka_bootstrap, infra.database_url),
           "DATABASE_ADMIN_LOCK_TIMEOUT_MS": lock_timeout_ms}
    return subprocess.Popen([sys.executable, "-m", "lotlens_admin", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _waits_for_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                      "'lotlens-admin' AND wait_event_type = 'Lock'")).scalar_one())


def _holds_its_lock(holder: Connection) -> bool:
    return bool(holder.execute(text("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND granted "
                                    "AND relation = 'client_webhook_secrets'::regclass "
                                    "AND mode = 'ExclusiveLock'")).scalar_one())


@contextmanager
def _rotation_behind_a_lock_left_open(
        infra: Infra, engine: Engine, lock_timeout_ms: str = ADMIN_LOCK_TIMEOUT_MS,
) -> Iterator[tuple[str, Connection, subprocess.Popen[str]]]:
    """`clients rotate` queued behind an operator's `LOCK TABLE` left open in psql, which stays held."""
    client = new_id("client-")
    with engine.begin() as conn:
        webhook_secrets.ensure(conn, [client])
    with engine.connect() as holder:
        holder.execute(text("LOCK TABLE client_webhook_secrets IN EXCLUSIVE MODE"))
        rotation = _admin(infra, "clients", "rotate", client, lock_timeout_ms=lock_timeout_ms)
        try:
            wait_for(lambda: _waits_for_a_lock(engine) or rotation.poll() is not None,
                     "the rotation waiting for the table", timeout_s=90, every_s=0.2)
            yield client, holder, rotation
        finally:
            if rotation.poll() is None:
                rotation.kill()
                rotation.communicate()


def _live(engine: Engine, client: str) -> list[str]:
    with engine.connect() as conn:
        return webhook_secrets.live(conn, client, utc_now())


def test_ctrl_c_while_a_rotation_waits_for_a_lock_still_held_ends_it_in_one_line_rotating_nothing(
        infra: Infra, engine: Engine) -> None:
    # psycopg2 acts on a signal only when the statement returns, here as the lock wait ends; which of
    # the two it then reports varies (a fresh-clone CI got 4 where a quiet run got 130): either is
    # one line and a documented status, and nothing was done. Unbounded, the command never ended.
    with _rotation_behind_a_lock_left_open(infra, engine, CTRL_C_LOCK_TIMEOUT_MS) as (client, holder,
                                                                                  rotation):
        before = _live(engine, client)
        rotation.send_signal(signal.SIGINT)
        out, err = rotation.communicate(timeout=60)  # the lock is never released
        assert _holds_its_lock(holder)
    assert (rotation.returncode in (130, 4), out) == (True, ""), err[-2000:]
    [line] = err.splitlines()
    assert line.startswith(("lotlens-admin: interrupted", "lotlens-admin: a lock it needs is held"))
    assert _live(engine, client) == before


def test_a_rotation_behind_a_lock_left_open_ends_by_itself_naming_the_table_exit_4(
        infra: Infra, engine: Engine) -> None:
    with _rotation_behind_a_lock_left_open(infra, engine) as (client, holder, rotation):
        before = _live(engine, client)
        out, err = rotation.communicate(timeout=60)
        assert _holds_its_lock(holder)
    assert (rotation.returncode, out) == (4, ""), err[-2000:]
    [line] = err.splitlines()
    assert line.startswith("lotlens-admin: a lock it needs is held: client_webhook_secrets is locked: "
                           "another session holds it"), line
    assert _live(engine, client) == before


def test_a_listing_whose_reader_went_away_ends_without_a_traceback(infra: Infra, engine: Engine) -> None:
    listing = _admin(infra, "shards", "paused")
    assert listing.stdout is not None and listing.stderr is not None
    listing.stdout.close()  # `| head -1` read what it wanted and left before the command wrote
    err = listing.stderr.read()
    assert listing.wait(timeout=60) == 141, err[-2000:]
    assert err == ""
