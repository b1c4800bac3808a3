"""Fixtures of the dispatcher tests: a private schema per test, its settings, the events read back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, make_url, text

from lotlens_common.db import make_engine
from lotlens_common.settings import DatabaseSettings, ServiceSettings
from lotlens_common.tables import metadata
from tests.conftest import new_id
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
