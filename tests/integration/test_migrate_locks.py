"""A migration queued behind a long reader gives way instead of stopping every query on its table
(PostgreSQL queues later lock requests behind a waiting `ALTER TABLE`)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from lotlens_common.db import LockPatience, make_engine, migrate
from lotlens_common.migrate import schema_current
from lotlens_common.settings import DatabaseSettings, TopicSettings
from tests.conftest import ROOT, Infra, own_schema
from tests.integration.admin_support import admin_env
from tests.integration.lock_waits import wait_for_a_lock_wait
from tests.polling import wait_for

pytestmark = pytest.mark.integration

BEFORE_HEAD = "0016_stage_places"  # the next migration, 0017, alters stage_shards
BEFORE_LOTS_COLUMN = "0029_idempotency_signature"  # the next, 0030, adds a column to lots


@pytest.fixture()
def behind(infra: Infra, engine: Engine) -> Iterator[Engine]:
    with own_schema(infra, engine, BEFORE_HEAD) as own:
        yield own


def test_a_migration_waiting_for_a_table_lock_lets_other_queries_through_then_ends(behind: Engine) -> None:
    failures: list[BaseException] = []

    def run() -> None:
        try:
            migrate(behind, patience=LockPatience(wait_s=0.5, pause_s=0.2, give_up_after_s=60))
        except BaseException as exc:  # the assertion below reports it
            failures.append(exc)

    with behind.connect() as reader:  # a long report reading stage_shards in one transaction
        reader.execute(text("SELECT count(*) FROM stage_shards"))
        migrator = threading.Thread(target=run)
        migrator.start()
        wait_for_a_lock_wait(behind, "the migration's ALTER", "stage_shards")
        with behind.connect() as stage:
            stage.execute(text("SET lock_timeout = '3s'"))
            try:
                started = time.monotonic()
                stage.execute(text("SELECT count(*) FROM stage_shards")).scalar_one()
            except OperationalError as exc:
                pytest.fail(f"a stage's query queued behind the migration: {exc.orig}")
            # Queued behind the migration's ALTER at most its `wait_s` (0.5 s), plus slack for a
            # loaded machine (4 test workers on 2 cores): 1.5 s in all once failed to be enough.
            assert time.monotonic() - started < 2.5
            stage.rollback()
        assert migrator.is_alive(), "the migration did not wait for the reader's lock"
        reader.rollback()
    migrator.join(timeout=30)
    assert not failures, failures
    with behind.connect() as conn:
        assert schema_current(behind)
        assert conn.execute(text("SELECT data_type FROM information_schema.columns WHERE table_schema = "
                                 "current_schema() AND table_name = 'stage_shards' AND column_name = "
                                 "'estimated_tokens'")).scalar_one() == "bigint"


def test_a_migration_that_never_gets_its_lock_fails_at_its_deadline(behind: Engine) -> None:
    with behind.connect() as reader:
        reader.execute(text("SELECT count(*) FROM stage_shards"))
        started = time.monotonic()
        with pytest.raises(OperationalError, match="lock timeout"):
            migrate(behind, patience=LockPatience(wait_s=0.3, pause_s=0.2, give_up_after_s=2))
        assert time.monotonic() - started < 5
        reader.rollback()


def test_a_migration_that_gives_up_names_the_sessions_holding_its_lock(
        behind: Engine, caplog: pytest.LogCaptureFixture) -> None:
    # It failed with "canceling statement due to lock timeout" alone: the SRE could not tell which
    # of the dispatcher replicas, reports or psql sessions to pause.
    with behind.connect() as reader:
        reader.execute(text("SET application_name = 'monthly-report'"))
        reader.execute(text("SELECT count(*) FROM stage_shards"))
        with caplog.at_level(logging.WARNING, logger="lotlens_common.db"), \
                pytest.raises(OperationalError, match="lock timeout"):
            migrate(behind, patience=LockPatience(wait_s=0.5, pause_s=0.2, give_up_after_s=2))
        reader.rollback()
    [gave_up] = [record for record in caplog.records if record.levelno == logging.ERROR]
    said = gave_up.getMessage()
    assert "stage_shards" in said and "'monthly-report'" in said and "idle in transaction" in said, said


def test_a_statement_timeout_of_the_role_does_not_cut_the_migrate_job_short(
        infra: Infra, engine: Engine, topics: TopicSettings) -> None:
    # A DBA's `ALTER ROLE lotlens SET statement_timeout = '300ms'` (or the workers' limits set on a
    # role shared behind a transaction-mode pooler) is every session's default, the migrate Job's
    # too. The tests' role may not alter roles: the connection's startup options give the same default.
    with own_schema(infra, engine, "0029_idempotency_signature") as behind:  # 0030 alters lots
        options = f"{behind.url.query['options']} -cstatement_timeout=300ms"
        url = behind.url.update_query_dict({"options": options}).render_as_string(hide_password=False)
        env = {**admin_env(infra.kafka_bootstrap, url, topics), "LOTLENS_TOPIC_PARTITIONS": "3"}
        with behind.connect() as reader:  # a long report holding lots for longer than the role's 0.3 s
            reader.execute(text("SELECT count(*) FROM lots"))
            job = subprocess.Popen([sys.executable, "-m", "lotlens_common.migrate"], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert job.stdout is not None
            log = []
            for line in job.stdout:  # until it gives way, its own 2 s lock wait outlasting the role's 0.3 s
                log.append(line)
                if "gave way" in line:
                    break
            reader.rollback()
        assert job.wait(timeout=120) == 0, "".join(log) + job.stdout.read()
        assert schema_current(behind)


def test_a_migration_gives_way_before_a_gateway_request_queued_behind_it_times_out(
        infra: Infra, engine: Engine) -> None:
    # A request's statements wait `DATABASE_REQUEST_LOCK_TIMEOUT_MS` (3 s) for a lock, then the
    # gateway answers 503. One that arrives while the migration waits for its ACCESS EXCLUSIVE lock
    # queues behind it: the migration must give way sooner than that, or every lots page asked for
    # while a long report reads `lots` fails, try after try, for the Job's 10 minutes.
    failures: list[BaseException] = []
    with own_schema(infra, engine, BEFORE_LOTS_COLUMN) as behind:
        def run() -> None:
            try:
                migrate(behind, patience=LockPatience(give_up_after_s=60))
            except BaseException as exc:  # the assertion below reports it
                failures.append(exc)

        database = DatabaseSettings(DATABASE_URL=behind.url.render_as_string(hide_password=False))
        gateway = make_engine(database, "gateway", limits=database.request_limits())
        try:
            with behind.connect() as report:  # a long report reading lots in one transaction
                report.execute(text("SELECT count(*) FROM lots"))
                migrator = threading.Thread(target=run)
                migrator.start()
                _wait_for_lock_request(behind, "lots")
                with gateway.connect() as request:
                    try:
                        request.execute(text("SELECT count(*) FROM lots WHERE job_id = 'job-1'")).scalar_one()
                    except OperationalError as exc:
                        pytest.fail(f"a gateway request queued behind the migration and failed: {exc.orig}")
                report.rollback()
            migrator.join(timeout=60)
        finally:
            gateway.dispose()
        assert not failures, failures
        assert schema_current(behind)


def _wait_for_lock_request(engine: Engine, table: str) -> None:
    """Return once a session waits for an ACCESS EXCLUSIVE lock on `table` (the migration's)."""
    with engine.connect() as conn:
        def asked() -> int:
            waiting = int(conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE relation = CAST(:t AS regclass) AND NOT granted "
                "AND mode = 'AccessExclusiveLock'"), {"t": table}).scalar_one())
            conn.rollback()
            return waiting

        wait_for(asked, f"the migration to ask for its lock on {table}")
