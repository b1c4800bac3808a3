"""A migration queued behind a long reader gives way instead of stopping every query on its table
(PostgreSQL queues later lock requests behind a waiting `ALTER TABLE`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from lotlens_common.db import LockPatience, migrate
from lotlens_common.migrate import schema_current
from tests.conftest import Infra, own_schema

pytestmark = pytest.mark.integration

BEFORE_HEAD = "0016_stage_places"  # the next migration, 0017, alters stage_shards


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
        time.sleep(1.5)
        with behind.connect() as stage:
            stage.execute(text("SET lock_timeout = '3s'"))
            try:
                started = time.monotonic()
                stage.execute(text("SELECT count(*) FROM stage_shards")).scalar_one()
            except OperationalError as exc:
                pytest.fail(f"a stage's query queued behind the migration: {exc.orig}")
            assert time.monotonic() - started < 1.5
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
