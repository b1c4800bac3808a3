"""A service's connections carry its name to PostgreSQL, where an SRE looks for it (pg_stat_activity),
timers to the kernel that notice a database that vanished, and limits on how long a statement
waits for a lock; their failures are errors every caller knows as transient."""

from __future__ import annotations

import os
import socket

import pytest
from psycopg2.errors import LockNotAvailable
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from lotlens_common.db import make_engine
from lotlens_common.kafka import TRANSIENT_ERRORS
from lotlens_common.row_sets import append_rows, copy_row
from lotlens_common.settings import DatabaseSettings
from lotlens_common.stage.adapters.postgres import QUEUES
from tests.conftest import Infra, new_id, own_schema
from tests.stalls import tables_locked

pytestmark = pytest.mark.integration


def _application_name(database_url: str) -> str:
    engine = make_engine(DatabaseSettings(DATABASE_URL=database_url), "result-store", autocommit=True)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            # What other sessions see, not only the session's own setting.
            return str(conn.execute(text("SELECT application_name FROM pg_stat_activity WHERE pid = :pid"),
                                    {"pid": pid}).scalar_one())
    finally:
        engine.dispose()


def test_connections_are_named_after_the_service(infra: Infra) -> None:
    assert _application_name(infra.database_url) == "lotlens-result-store"


def test_an_application_name_in_the_database_url_is_kept(infra: Infra) -> None:
    separator = "&" if "?" in infra.database_url else "?"
    named = f"{infra.database_url}{separator}application_name=eu-west-store"
    assert _application_name(named) == "eu-west-store"


def _socket_timers(database_url: str) -> dict[str, int]:
    """What the kernel holds for a `make_engine` connection's socket: its keepalive timers and its
    TCP user timeout (Linux's option 18; the socket module has no name for it before 3.12)."""
    engine = make_engine(DatabaseSettings(DATABASE_URL=database_url), "tests")
    try:
        with engine.connect() as conn:
            descriptor = conn.connection.dbapi_connection.fileno()  # type: ignore[union-attr]
            with socket.socket(fileno=os.dup(descriptor)) as sock:
                return {"keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                        "idle_s": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                        "interval_s": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                        "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                        "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP, 18)}
    finally:
        engine.dispose()


def test_connections_give_a_vanished_database_up_within_half_a_minute(infra: Infra) -> None:
    # The system's own: two hours of silence before the first keepalive, 15 minutes of
    # retransmissions (tests/integration/test_db_dark_path.py has the database vanish).
    assert _socket_timers(infra.database_url) == {
        "keepalive": 1, "idle_s": 15, "interval_s": 5, "count": 3, "user_timeout_ms": 30_000}


def test_keepalives_and_a_user_timeout_in_the_database_url_are_kept(infra: Infra) -> None:
    separator = "&" if "?" in infra.database_url else "?"
    timers = _socket_timers(f"{infra.database_url}{separator}keepalives_idle=42&tcp_user_timeout=90000")
    assert (timers["idle_s"], timers["user_timeout_ms"]) == (42, 90_000)
    assert (timers["interval_s"], timers["count"]) == (5, 3)  # the settings' for the others


def _server_settings(engine: Engine, *names: str) -> dict[str, str]:
    """What the server holds for a session of `engine` (its socket's timers read back from it)."""
    try:
        with engine.connect() as conn:
            return dict(conn.execute(text("SELECT name, setting FROM pg_settings WHERE name = ANY(:names)"),
                                     {"names": list(names)}).all())
    finally:
        engine.dispose()


def test_the_server_gives_a_vanished_service_up_within_half_a_minute(infra: Infra) -> None:
    # Its defaults are the system's: two hours of silence before the first keepalive, so a client
    # whose host vanished kept its session, and the locks of its session, as long.
    timers = _server_settings(make_engine(DatabaseSettings(DATABASE_URL=infra.database_url), "tests"),
                              "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
                              "tcp_user_timeout")
    assert timers == {"tcp_keepalives_idle": "15", "tcp_keepalives_interval": "5",
                      "tcp_keepalives_count": "3", "tcp_user_timeout": "30000"}


def test_the_servers_end_follows_keepalives_and_a_user_timeout_the_database_url_sets(infra: Infra) -> None:
    # An operator riding out a link that stalls for minutes sets them in DATABASE_URL: the server
    # dropped those sessions after its own 30 s all the same.
    separator = "&" if "?" in infra.database_url else "?"
    url = f"{infra.database_url}{separator}keepalives_idle=42&tcp_user_timeout=0"
    timers = _server_settings(make_engine(DatabaseSettings(DATABASE_URL=url), "tests"),
                              "tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_user_timeout")
    assert timers == {"tcp_keepalives_idle": "42", "tcp_keepalives_interval": "5", "tcp_user_timeout": "0"}


def test_service_sessions_idle_in_a_transaction_end_after_a_minute_and_admin_sessions_never(
        infra: Infra) -> None:
    database = DatabaseSettings(DATABASE_URL=infra.database_url)
    idle = "idle_in_transaction_session_timeout"
    for name, limits in (("result-store", database.worker_limits()), ("gateway", database.request_limits())):
        assert _server_settings(make_engine(database, name, limits=limits), idle) == {idle: "60000"}, name
    admin = make_engine(database, "admin", limits=database.admin_limits())
    assert _server_settings(admin, idle) == {idle: "0"}  # the role's, as for migrations


def test_a_stage_queue_over_ten_thousand_jobs_is_planned_without_jit(infra: Infra, engine: Engine) -> None:
    # PostgreSQL compiles a plan whose estimate passes `jit_above_cost` (on by default): the
    # queue query's estimate over 10,000 stage jobs (15 days of jobs) took 264 ms of JIT at every
    # tick of an idle stage, for a 2 ms query; the job-usage sum at a job's end 1-2 s.
    with own_schema(infra, engine) as own, own.begin() as conn:
        conn.execute(text("INSERT INTO stage_jobs (stage, job_id, last_place, claimed_place) "
                          "SELECT 'vision', 'job-' || n, 50000, 50000 FROM generate_series(1, 10000) n"))
        conn.execute(text("ANALYZE stage_jobs"))
        # Without the 2.9 million stage lots of 15 days the estimate stays low: JIT any plan.
        conn.execute(text("SET LOCAL jit_above_cost = 0"))
        plan = conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) SELECT j.job_id {QUEUES}"),
                            {"stage": "vision"}).scalar_one()
        search_path = conn.execute(text("SHOW search_path")).scalar_one()
        jit = conn.execute(text("SHOW jit")).scalar_one()  # also where the server has no LLVM
    assert "JIT" not in plan[0] and jit == "off", plan[0].get("JIT")
    assert search_path.startswith("own_")  # the URL's own options are kept


def test_a_copy_into_a_locked_table_fails_as_a_transient_error_like_any_other_statement(infra: Infra) -> None:
    # The consumers take an OperationalError for "the database is not there, try again"; the raw
    # psycopg2 error COPY raised made a batch poison: tried alone three times, then dead-lettered.
    database = DatabaseSettings(DATABASE_URL=infra.database_url, DATABASE_WORKER_LOCK_TIMEOUT_MS=200)
    worker = make_engine(database, "tests", limits=database.worker_limits())
    lot = copy_row(["translation", new_id("job-"), "lot-0", "c1", "1", "{}", "waiting", "1"])
    try:
        with (tables_locked(infra.database_url, "stage_lots"), worker.begin() as conn,
              pytest.raises(TRANSIENT_ERRORS) as raised):
            append_rows(conn, "COPY stage_lots (stage, job_id, lot_id, client_id, total_lots, work, "
                              "status, place) FROM STDIN", lot)
        assert isinstance(raised.value, OperationalError) and isinstance(raised.value.orig, LockNotAvailable)
    finally:
        worker.dispose()
