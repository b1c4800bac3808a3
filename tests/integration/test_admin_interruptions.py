"""`lotlens-admin` stopped by its operator (Ctrl-C) or by the reader of its output (`| head`):
one line or none on stderr, a documented exit status, and nothing half done (README, "Operations")."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from sqlalchemy import Engine, text

from lotlens_common import webhook_secrets
from lotlens_common.clock import utc_now
from tests.conftest import ROOT, Infra, new_id
from tests.integration.admin_support import admin_env
from tests.integration.dead_letter_support import wait_for

pytestmark = pytest.mark.integration


def _admin(infra: Infra, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lotlens_admin", *argv], cwd=ROOT,
                            env=admin_env(infra.kafka_bootstrap, infra.database_url),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _waits_for_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                      "'lotlens-admin' AND wait_event_type = 'Lock'")).scalar_one())


def test_ctrl_c_while_a_rotation_waits_for_its_table_is_one_line_exit_130_and_rotates_nothing(
        infra: Infra, engine: Engine) -> None:
    client = new_id("client-")
    with engine.begin() as conn:
        webhook_secrets.ensure(conn, [client])
        before = webhook_secrets.live(conn, client, utc_now())
    with engine.connect() as holder:  # an operator's fix left open in psql
        holder.execute(text("LOCK TABLE client_webhook_secrets IN EXCLUSIVE MODE"))
        rotation = _admin(infra, "clients", "rotate", client)
        wait_for(lambda: _waits_for_a_lock(engine), "the rotation waiting for the table")
        rotation.send_signal(signal.SIGINT)
        holder.rollback()
        out, err = rotation.communicate(timeout=60)
    assert (rotation.returncode, out) == (130, ""), err[-2000:]
    [line] = err.splitlines()
    assert line.startswith("lotlens-admin: interrupted")
    with engine.connect() as conn:
        assert webhook_secrets.live(conn, client, utc_now()) == before


def test_a_listing_whose_reader_went_away_ends_without_a_traceback(infra: Infra, engine: Engine) -> None:
    listing = _admin(infra, "shards", "paused")
    assert listing.stdout is not None and listing.stderr is not None
    listing.stdout.close()  # `| head -1` read what it wanted and left before the command wrote
    err = listing.stderr.read()
    assert listing.wait(timeout=60) == 141, err[-2000:]
    assert err == ""
