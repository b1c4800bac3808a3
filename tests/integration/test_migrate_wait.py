"""`python -m lotlens_common.migrate --wait`, the services' init container: it waits (no crash)
while the schema or the topics are missing and returns once the migrate Job has run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from lotlens_common.db import make_engine
from lotlens_common.migrate import schema_current
from lotlens_common.settings import DatabaseSettings, KafkaSettings
from tests.conftest import ROOT, Infra, delete_topics, new_id

pytestmark = pytest.mark.integration


@pytest.fixture()
def empty_schema(infra: Infra, engine: Engine) -> Iterator[str]:
    schema = new_id("wait_")
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield f"{infra.database_url}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def run_migrate(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "lotlens_common.migrate", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _until_said(process: subprocess.Popen[bytes], needle: str) -> str:
    """What `process` printed up to its first line holding `needle` (or to its exit)."""
    said = []
    assert process.stdout is not None
    for line in process.stdout:
        said.append(line.decode())
        if needle in said[-1]:
            break
    return "".join(said)


def test_the_init_container_waits_for_the_migrate_job_then_returns(infra: Infra, empty_schema: str) -> None:
    prefix = new_id("mw")
    names = {f"LOTLENS_TOPIC_{n.upper()}": f"{prefix}.{n}" for n in
             ("submissions", "vision", "translation", "completions", "webhooks", "dead_letter")}
    env = {**os.environ, **names, "DATABASE_URL": empty_schema,
           "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap, "LOTLENS_TOPIC_PARTITIONS": "2"}
    waiter = run_migrate(env, "--wait")
    try:
        # Read up to its first "waiting" line (it polls every 5 s) instead of sleeping 4 s for it.
        said = _until_said(waiter, "waiting for the migrate Job")
        assert waiter.poll() is None, said + waiter.communicate()[0].decode()
        job = run_migrate(env)
        assert job.wait(timeout=120) == 0, (job.stdout.read() if job.stdout else b"").decode()
        assert waiter.wait(timeout=60) == 0
        log = said + (waiter.stdout.read() if waiter.stdout else b"").decode()
        assert "waiting for the migrate Job" in log
    finally:
        if waiter.poll() is None:
            waiter.kill()
        delete_topics(KafkaSettings(bootstrap_servers=infra.kafka_bootstrap), list(names.values()))


@pytest.mark.parametrize(("recorded", "prepared"), [
    (None, False),  # no migration yet
    ("0001", False),  # behind this image: the migrate Job has not run
    ("9999_of_a_newer_release", True),  # ahead: a rollback, or an old pod started mid-rollout
])
def test_the_init_container_takes_a_schema_at_or_past_its_own(
        empty_schema: str, recorded: str | None, prepared: bool) -> None:
    # A schema a newer release migrated kept every pod of this image waiting for good: a
    # `kubectl rollout undo` hung in Init. Old pods already run on the new schema mid-rollout.
    engine = make_engine(DatabaseSettings(DATABASE_URL=empty_schema), "tests")
    try:
        if recorded is not None:
            with engine.begin() as conn:
                conn.execute(text("CREATE TABLE alembic_version (version_num varchar(64) PRIMARY KEY)"))
                conn.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": recorded})
        assert schema_current(engine) is prepared
    finally:
        engine.dispose()
