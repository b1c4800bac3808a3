"""Shared fixtures: real Kafka and PostgreSQL for the integration and end-to-end tiers.

Infrastructure comes from `KAFKA_BOOTSTRAP_SERVERS` / `DATABASE_URL` when set, from
testcontainers when a Docker engine answers, and otherwise from `scripts/infra.sh`.
Every test gets its own topic names (random prefix) instead of cleaning up shared ones.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from sqlalchemy import Connection, Engine, create_engine, make_url, text
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling

from lotlens_common.db import make_engine, migrate
from lotlens_common.settings import DatabaseSettings, KafkaSettings, ServiceSettings, TopicSettings
from lotlens_common.topics import ensure_topics
from tests import network_guard
from tests.seeds import SEEDS

ROOT = Path(__file__).resolve().parents[1]
__all__ = ["SEEDS", "Infra", "new_id"]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("LOTLENS_SMOKE_OPENAI") != "1":  # `make smoke-openai` talks to the real API
        network_guard.install()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak tests run only when the mark expression names them (`make chaos`: `-m soak`): an
    `addopts` of `-m "not soak"` was replaced by any `-m` a developer gave (`PYTEST_ARGS="-m
    integration"` ran the soak runs too)."""
    if "soak" not in config.option.markexpr:
        soak = [item for item in items if item.get_closest_marker("soak")]
        if soak:
            config.hook.pytest_deselected(items=soak)
            items[:] = [item for item in items if not item.get_closest_marker("soak")]


CONSOLE_TESTS = "tests/e2e/console"


class FixtureScopeScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist has no types
    """xdist hands out a module's tests, and the console package's, to one worker as one unit: a
    module- or package-scoped fixture (a whole stack, a chaos stack, a browser and its finished job)
    is then set up once, not once per worker that drew one of its tests (three chaos stacks of 70-140
    s for one module of four tests). The Makefile keeps the units in collection order (the longest
    tiers first; ordered by test count, the one-test chaos run came last)."""

    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        return CONSOLE_TESTS if module.startswith(f"{CONSOLE_TESTS}/") else module


@pytest.hookimpl(optionalhook=True)  # registered by xdist only: `-p no:xdist` runs in-process
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> LoadScopeScheduling:
    return FixtureScopeScheduling(config, log)


@pytest.fixture(autouse=True)
def no_dns_lookups() -> Iterator[None]:
    """Fail a test whose code asked DNS for a name (see `tests/network_guard.py`)."""
    network_guard.ASKED.clear()
    yield
    assert not network_guard.ASKED, f"asked DNS for {network_guard.ASKED}: stub the resolver"


@dataclass(frozen=True)
class Infra:
    """Addresses of the broker and the database the tests use."""

    kafka_bootstrap: str
    database_url: str


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


def _from_containers() -> Iterator[Infra]:
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with KafkaContainer().with_kraft() as kafka, PostgresContainer("postgres:16") as pg:
        url = pg.get_connection_url().replace("postgresql://", "postgresql+psycopg2://")
        yield Infra(kafka.get_bootstrap_server(), url)


def _from_script() -> Infra:
    subprocess.run([str(ROOT / "scripts" / "infra.sh"), "start"], check=True)
    env = subprocess.run([str(ROOT / "scripts" / "infra.sh"), "env"], check=True,
                         capture_output=True, text=True).stdout
    values = dict(line.removeprefix("export ").split("=", 1) for line in env.splitlines() if "=" in line)
    return Infra(values["KAFKA_BOOTSTRAP_SERVERS"], values["DATABASE_URL"])


def _test_database(url: str) -> str:
    """A database of the tests' own beside the given one, so a running `make up` stack (which
    works on the given database) never picks up the tests' rows, nor the tests its rows."""
    given = make_url(url)
    # One per pytest-xdist worker too: a stage loop or projector under test claims whatever rows
    # its tables hold, so two workers' tests on one database took each other's lots.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    # `LOTLENS_TEST_DATABASE`: a run that needs a database of its own (the live OpenAI check).
    name = (os.environ.get("LOTLENS_TEST_DATABASE")
            or f"{given.database}_test" + (f"_{worker}" if worker else ""))
    admin = create_engine(given, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return given.set(database=name).render_as_string(hide_password=False)


def _sources() -> Iterator[Infra]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("DATABASE_URL"):
        yield Infra(os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["DATABASE_URL"])
    elif _docker_answers():
        yield from _from_containers()
    else:
        yield _from_script()


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """Kafka and PostgreSQL, from the environment, containers or the project's script."""
    for found in _sources():
        yield Infra(found.kafka_bootstrap, _test_database(found.database_url))


@pytest.fixture(scope="session")
def engine(infra: Infra) -> Iterator[Engine]:
    """A migrated database engine."""
    eng = make_engine(DatabaseSettings(DATABASE_URL=infra.database_url), "tests")
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture()
def topics(infra: Infra) -> Iterator[TopicSettings]:
    """Fresh topics for this test only, deleted afterwards (thousands of dead partitions would
    slow every broker start down)."""
    with fresh_topics(infra) as settings:
        yield settings


@contextmanager
def fresh_topics(infra: Infra) -> Iterator[TopicSettings]:
    """Topics of a random prefix, created now and deleted on exit."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    names = {name: f"{prefix}.{name}" for name in
             ("submissions", "vision", "translation", "completions", "webhooks", "dead_letter")}
    settings = TopicSettings.model_validate({**names, "partitions": 3})
    kafka = KafkaSettings(bootstrap_servers=infra.kafka_bootstrap)
    ensure_topics(kafka, settings)
    try:
        yield settings
    finally:
        delete_topics(kafka, settings.all_topics())


def delete_topics(kafka: KafkaSettings, names: list[str]) -> None:
    """Delete a test's topics, waiting for the answer.

    A client dropped right after the call was destroyed before the request left, and every
    test's topics stayed (20,000 partitions after a day, then "Too many open files").
    """
    admin = AdminClient(kafka.client_config())
    for future in admin.delete_topics(names, operation_timeout=10).values():
        with contextlib.suppress(KafkaException, TimeoutError):  # gone already, or the broker is down
            future.result(15)


@pytest.fixture()
def settings(infra: Infra, engine: Engine, topics: TopicSettings) -> ServiceSettings:
    """Service settings pointing at the test infrastructure and this test's topics."""
    return ServiceSettings(
        kafka=KafkaSettings(bootstrap_servers=infra.kafka_bootstrap, consume_batch_timeout_s=0.05),
        database=DatabaseSettings(DATABASE_URL=infra.database_url),
        topics=topics,
        allow_loopback_urls=True,
    )


def new_id(prefix: str = "") -> str:
    """A random id, so tests never collide and never need cleanup."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def rows_read(conn: Connection, table: str) -> int:
    """Rows of `table` read so far in this connection's transaction (`pg_stat_xact_*`).

    Its counts may still hold an earlier transaction's, not yet flushed: compare two readings
    taken in one transaction, never one reading with zero.
    """
    return int(conn.execute(text(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables "
        "WHERE relid = CAST(:table AS regclass)"), {"table": table}).scalar_one())


@contextmanager
def own_schema(infra: Infra, engine: Engine, revision: str | None = "head",
               wait_for_disk: bool = True) -> Iterator[Engine]:
    """An engine on a new schema migrated to `revision` (None: left empty), dropped on exit.
    Without `wait_for_disk` its commits return before their WAL is flushed: for tests of what the
    rows hold, not of what survives a crash."""
    schema = new_id("own_")
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    options = f"-csearch_path%3D{schema}" + ("" if wait_for_disk else "%20-csynchronous_commit%3Doff")
    own = make_engine(DatabaseSettings(DATABASE_URL=f"{infra.database_url}?options={options}"), "tests")
    if revision is not None:
        migrate(own, revision)
    yield own
    own.dispose()
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
