"""Fixtures of the event-log tests: a database of their own (a rebuild swaps every read model,
which must not take the other tests' rows away) and service settings pointing at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, make_url

from lotlens_common.db import make_engine, migrate
from lotlens_common.producer import EventProducer
from lotlens_common.settings import DatabaseSettings, KafkaSettings, ServiceSettings, TopicSettings
from tests.conftest import Infra, new_id
from tests.databases import connect, drop_database


@pytest.fixture()
def own_database(infra: Infra) -> Iterator[str]:
    """The URL of a fresh, migrated database, dropped afterwards."""
    given = make_url(infra.database_url)
    name = new_id("lotlens_rebuild_")
    admin = connect(infra.database_url)
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield given.set(database=name).render_as_string(hide_password=False)
        with admin.cursor() as cur:
            drop_database(cur, name)
    finally:
        admin.close()


@pytest.fixture()
def own_engine(own_database: str) -> Iterator[Engine]:
    """A migrated engine on the test's own database."""
    engine = make_engine(DatabaseSettings(DATABASE_URL=own_database), "tests")
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture()
def own_settings(infra: Infra, own_database: str, own_engine: Engine,
                 topics: TopicSettings) -> ServiceSettings:
    """Service settings on this test's topics and database."""
    return ServiceSettings(
        kafka=KafkaSettings(bootstrap_servers=infra.kafka_bootstrap, consume_batch_timeout_s=0.05),
        database=DatabaseSettings(DATABASE_URL=own_database), topics=topics, allow_loopback_urls=True)


@pytest.fixture()
def producer(own_settings: ServiceSettings) -> Iterator[EventProducer]:
    """The producer the live result-store publishes JobCompleted with."""
    service_producer = EventProducer(own_settings.kafka, "result-store-test")
    yield service_producer
    service_producer.flush()


@pytest.fixture()
def publisher(own_settings: ServiceSettings) -> EventProducer:
    """A producer standing in for the other services."""
    return EventProducer(own_settings.kafka, "pipeline-test")
