"""Migrations that build an index concurrently (outside a transaction, so `lots` keeps taking
writes): an interrupted build is rebuilt by the next run, and two migrators still take turns."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError, PendingRollbackError

from lotlens_common.db import MIGRATIONS, LockPatience, migrate
from lotlens_common.migrate import schema_current
from lotlens_result_store.shadow import hold_migrations
from tests.conftest import Infra, own_schema
from tests.polling import wait_for

pytestmark = pytest.mark.integration

BEFORE = "0019_outbox_client_events"  # the next migration, 0020, builds indexes on lots concurrently
BUILT = ("ix_lots_request_order", "ix_lots_webhook_order")
# Where a run ends: 0020 and whatever came after it.
HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()


@pytest.fixture()
def behind(infra: Infra, engine: Engine) -> Iterator[Engine]:
    """A schema at 0019, with lots to index."""
    with own_schema(infra, engine, BEFORE) as own:
        with own.begin() as conn:
            conn.execute(text("INSERT INTO lots (job_id, lot_id, seq, webhook) SELECT 'job-' || n % 10, "
                              "'lot-' || n, n, 'https://hooks.example.com/' || n % 3 "
                              "FROM generate_series(1, 1000) n"))
        yield own


def indexes(conn: Connection) -> dict[str, bool]:
    """The built indexes of `lots` in the schema, and whether each is valid."""
    rows = conn.execute(text("SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = "
                             "i.indexrelid WHERE i.indrelid = to_regclass('lots') AND c.relname = ANY(:n)"),
                        {"n": list(BUILT)}).all()
    return {str(name): bool(valid) for name, valid in rows}


def revision(conn: Connection) -> str:
    return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())


def test_a_build_killed_midway_leaves_an_invalid_index_that_the_next_run_drops_and_builds_again(
        behind: Engine) -> None:
    # A migrate Job killed while its build waits (or a session ended by an operator) leaves the
    # index in the catalogue, invalid, under the name.
    failures: list[BaseException] = []

    def run() -> None:
        try:
            migrate(behind, patience=LockPatience(give_up_after_s=1))
        except BaseException as exc:  # checked below
            failures.append(exc)

    with behind.connect() as writer:  # a write in progress on lots: the build waits for it
        writer.execute(text("INSERT INTO lots (job_id, lot_id) VALUES ('job-w', 'lot-w')"))
        migrator = threading.Thread(target=run)
        migrator.start()
        wait_for(lambda: _building(behind), "the build to wait for the write")
        with behind.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                               "datname = current_database() AND query LIKE 'CREATE INDEX CONCURRENTLY%'"))
        migrator.join(timeout=60)
        writer.rollback()
    assert failures and isinstance(failures[0], OperationalError | PendingRollbackError), failures
    with behind.connect() as conn:
        assert indexes(conn) == {BUILT[0]: False}  # CREATE INDEX ... IF NOT EXISTS would keep it
        assert revision(conn) == BEFORE
    migrate(behind)
    migrate(behind)  # a second run finds nothing to do
    with behind.connect() as conn:
        assert indexes(conn) == dict.fromkeys(BUILT, True)
        assert revision(conn) == HEAD
    assert schema_current(behind)


def test_a_build_waits_for_a_transaction_longer_than_the_migrations_lock_timeout(behind: Engine) -> None:
    # The lock timeout keeps DDL from queueing writers behind it; a concurrent build queues none.
    # Bounded by it, a build gave way to any transaction older than 5 s (a big job's lots being
    # streamed), threw its work away and started again, until the migrate Job failed.
    with behind.connect() as report:
        report.execution_options(isolation_level="REPEATABLE READ")
        report.execute(text("SELECT count(*) FROM jobs"))
        ended = threading.Timer(2.0, report.rollback)
        ended.start()
        migrate(behind, patience=LockPatience(wait_s=0.3, pause_s=0.1, give_up_after_s=1))
        ended.join()
    with behind.connect() as conn:
        assert indexes(conn) == dict.fromkeys(BUILT, True)
        assert revision(conn) == HEAD


def test_two_migrators_at_once_take_turns_and_neither_is_cancelled_by_the_others_index_build(
        behind: Engine, caplog: pytest.LogCaptureFixture) -> None:
    # A migrator blocked in pg_advisory_lock holds a snapshot, which the index build of the one
    # holding the lock waits for: PostgreSQL found the deadlock and cancelled one of them.
    failures: list[BaseException] = []

    def run() -> None:
        try:
            migrate(behind, patience=LockPatience(wait_s=30))
        except BaseException as exc:  # the assertion below reports it
            failures.append(exc)

    with behind.connect() as writer:  # a write in progress on lots: the first build waits for it
        writer.execute(text("INSERT INTO lots (job_id, lot_id) VALUES ('job-w', 'lot-w')"))
        first = threading.Thread(target=run)
        first.start()
        wait_for(lambda: _building(behind), "the first migrator to start its build")
        caplog.set_level(logging.INFO, logger="lotlens_common.db")
        second = threading.Thread(target=run)
        second.start()
        wait_for(lambda: "another process is migrating the schema" in caplog.text,
                 "the second migrator to find the lock taken", timeout_s=60)
        time.sleep(1.5)  # it waits for the lock meanwhile; PostgreSQL looks for deadlocks after 1 s
        assert first.is_alive() and second.is_alive()
        writer.commit()
    first.join(timeout=60)
    second.join(timeout=60)
    assert not failures, failures
    with behind.connect() as conn:
        assert indexes(conn) == dict.fromkeys(BUILT, True)
        assert revision(conn) == HEAD


def test_a_projections_rebuild_waiting_for_the_migrations_lock_is_not_cancelled_by_an_index_build(
        behind: Engine) -> None:
    # `lotlens-admin projections rebuild` holds the migrations' lock while it makes its shadow
    # tables and at its swap. Blocked in pg_advisory_xact_lock it held a snapshot that the
    # migrator's build waits for, and PostgreSQL cancelled one of the two as a deadlock.
    failures: list[BaseException] = []

    def migrator() -> None:
        try:
            migrate(behind, patience=LockPatience(wait_s=30))
        except BaseException as exc:  # the assertion below reports it
            failures.append(exc)

    def rebuild_step() -> None:
        try:
            with behind.connect() as conn, conn.begin():
                hold_migrations(conn)
        except BaseException as exc:
            failures.append(exc)

    with behind.connect() as writer:
        writer.execute(text("INSERT INTO lots (job_id, lot_id) VALUES ('job-w', 'lot-w')"))
        first = threading.Thread(target=migrator)
        first.start()
        wait_for(lambda: _building(behind), "the migrator to start its build")
        rebuild = threading.Thread(target=rebuild_step)
        rebuild.start()
        wait_for(lambda: _asked(behind, "SELECT pg_try_advisory_xact_lock"),
                 "the rebuild to ask for the migrations' lock", timeout_s=60)
        time.sleep(1.5)  # it waits for the lock meanwhile; PostgreSQL looks for deadlocks after 1 s
        writer.commit()
    first.join(timeout=60)
    rebuild.join(timeout=60)
    assert not failures, failures
    with behind.connect() as conn:
        assert indexes(conn) == dict.fromkeys(BUILT, True)


def _asked(engine: Engine, statement: str) -> bool:
    """Whether a session of this database, in a transaction, ran `statement` last (`query` keeps it
    between statements; a pooled session's last one is idle, outside a transaction)."""
    with engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE :s "
            "AND state <> 'idle'"), {"s": f"{statement}%"}).scalar_one())


def _building(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
            "query LIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'")).scalar_one())


def test_an_index_drop_waits_for_a_transaction_that_has_read_the_table_longer_than_the_lock_timeout(
        infra: Infra, engine: Engine) -> None:
    # 0025 drops `ix_outbox_job` once its replacement is built. DROP INDEX CONCURRENTLY waits for
    # every transaction holding any lock on the table (a reader too, which a build does not wait
    # for); bounded by the runner's lock timeout, the drop gave way to any reader open longer, and
    # the migrate Job failed, though the waits queue no reads or writes.
    with own_schema(infra, engine, "0024_dispatch_unready_since") as behind, behind.connect() as reader:
        reader.execute(text("SELECT count(*) FROM outbox"))  # idle in transaction, still locking
        ended = threading.Timer(2.0, reader.rollback)
        ended.start()
        migrate(behind, patience=LockPatience(wait_s=0.3, pause_s=0.1, give_up_after_s=1))
        ended.join()
        with behind.connect() as conn:
            outbox_indexes = set(conn.execute(text(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename = 'outbox'")).scalars())
            assert "ix_outbox_job_events" in outbox_indexes and "ix_outbox_job" not in outbox_indexes
            assert revision(conn) == HEAD
