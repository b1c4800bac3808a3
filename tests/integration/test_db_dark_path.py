"""A database that vanishes without a word (a failover's old primary, a dropped NAT entry): its
connections fail within a bound, and the engine's next connection works, instead of a statement
waiting out the kernel's retransmissions (15 minutes) or, waiting for an answer, for ever."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from tests.conftest import Infra
from tests.dark_path import QUICK_DETECTION, DarkPath, Pending, engine_across
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def test_a_statement_sent_to_a_vanished_database_fails_within_its_timeout_and_the_next_one_works(
        database_path: DarkPath, infra: Infra) -> None:
    # Short settings: the production defaults (30 s, test_db_engine.py shows they reach the socket)
    # took 30.5 s here, a test's worth of the suite's time for the kernel doing the same thing.
    engine = engine_across(database_path, infra.database_url, **QUICK_DETECTION)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            database_path.go_dark()
            outcome = Pending(lambda: conn.execute(text("SELECT 1"))).outcome(conn, within_s=30)
        assert outcome.finished, f"SELECT 1 still waited {outcome.seconds:.0f} s after its database vanished"
        assert isinstance(outcome.error, OperationalError), outcome.error
        assert outcome.seconds < 20, f"noticed only after {outcome.seconds:.0f} s"
        print(f"failed after {outcome.seconds:.1f} s: {outcome.error.orig}")
        with engine.connect() as conn:  # the pool dropped the dead connection: a new one works
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_a_statement_waiting_for_its_answer_when_the_database_vanishes_fails_in_seconds(
        database_path: DarkPath, infra: Infra, engine: Engine) -> None:
    # The statement went out and was acknowledged: with nothing left unacknowledged no
    # retransmission ever gives up, and only keepalives notice that the peer is gone.
    across_path = engine_across(database_path, infra.database_url, **QUICK_DETECTION)
    try:
        with across_path.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            sleeping = Pending(lambda: conn.execute(text("SELECT pg_sleep(600)")))
            try:
                _wait_until_running(engine, pid)
                database_path.go_dark()
                outcome = sleeping.outcome(conn, within_s=30)
            finally:
                with engine.connect() as admin:  # its server side would sleep on
                    admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        across_path.dispose()
    assert outcome.finished, f"a statement waiting for its answer still waited {outcome.seconds:.0f} s later"
    assert isinstance(outcome.error, OperationalError), outcome.error
    assert outcome.seconds < 20, f"noticed only after {outcome.seconds:.0f} s"


def _wait_until_running(engine: Engine, pid: int) -> None:
    """Until PostgreSQL runs the statement of session `pid` (it was sent and acknowledged)."""
    def running() -> bool:
        with engine.connect() as conn:
            return bool(conn.execute(text("SELECT state = 'active' FROM pg_stat_activity WHERE pid = :pid"),
                                     {"pid": pid}).scalar())

    wait_for(running, f"session {pid} to start its statement", timeout_s=10)
