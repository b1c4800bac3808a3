"""Fixtures of the dispatcher tests: a private schema per test, its settings, the events read back,
and that schema behind a proxy whose connections can be cut."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, make_url, text

from chaos.network import Toxiproxy, toxiproxy_binary
from lotlens_common.db import make_engine
from lotlens_common.settings import DatabaseSettings, ServiceSettings
from lotlens_common.tables import metadata
from tests.conftest import ROOT, new_id
from tests.integration.webhook_dispatcher.support import WebhookEvents


@pytest.fixture()
def schema_engine(settings: ServiceSettings, engine: Engine) -> Iterator[tuple[Engine, str]]:
    """A private schema for this test: no other dispatcher (another test run, the end-to-end
    stack) can claim its deliveries, and it sees none of theirs."""
    schema = new_id("webhooks_")
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(settings.database.database_url).update_query_dict({"options": f"-csearch_path={schema}"})
    url_text = url.render_as_string(hide_password=False)
    private = make_engine(DatabaseSettings(DATABASE_URL=url_text), "tests")
    metadata.create_all(private)
    yield private, url_text
    private.dispose()
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture()
def db(schema_engine: tuple[Engine, str]) -> Engine:
    return schema_engine[0]


@pytest.fixture()
def config(settings: ServiceSettings, schema_engine: tuple[Engine, str]) -> ServiceSettings:
    """The test's settings, pointed at its private schema."""
    return settings.model_copy(update={"database": DatabaseSettings(DATABASE_URL=schema_engine[1])})


@pytest.fixture()
def events(settings: ServiceSettings) -> Iterator[WebhookEvents]:
    reader = WebhookEvents(settings)
    yield reader
    reader.close()


@pytest.fixture()
def proxied_db(schema_engine: tuple[Engine, str], tmp_path: Path) -> Iterator[tuple[Toxiproxy, Engine]]:
    """The test's schema reached through a toxiproxy proxy named `postgres`: a dispatcher on this
    engine loses PostgreSQL alone while a fault is on (`proxy.add("postgres", "net-reset")`)."""
    proxy = Toxiproxy(toxiproxy_binary(ROOT), tmp_path / "toxiproxy.log")
    proxy.start()
    try:
        url = make_url(schema_engine[1])
        port = proxy.proxy("postgres", url.port or 5432)
        proxied = make_engine(DatabaseSettings(DATABASE_URL=url.set(port=port).render_as_string(
            hide_password=False)), "tests")
        yield proxy, proxied
        proxied.dispose()
    finally:
        proxy.stop()
