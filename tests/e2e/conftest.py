"""Fixtures of the end-to-end tier: a whole stack per test, plus image host and webhook receiver."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine

from lotlens_common.settings import TopicSettings
from tests.conftest import Infra, own_schema
from tests.e2e.harness import Stack
from tests.servers import WebhookReceiver, image_host, webhook_receiver


@pytest.fixture()
def images() -> Iterator[str]:
    """Base URL of a local image host (paths containing `missing` answer 404)."""
    with image_host() as url:
        yield url


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    """A local webhook receiver answering 200."""
    with webhook_receiver() as hooks:
        yield hooks


@pytest.fixture()
def stack_engine(infra: Infra, engine: Engine) -> Iterator[Engine]:
    """A database schema of this test's own, migrated: stacks running beside it (another test's,
    a `make up` stack) never see, claim or deliver its rows."""
    with own_schema(infra, engine) as own:
        yield own


@pytest.fixture()
def stack(infra: Infra, stack_engine: Engine, topics: TopicSettings, tmp_path: Path) -> Iterator[Stack]:
    """The five services and the OpenAI stand-in as processes, on this test's topics and schema."""
    with running_stack(infra, stack_engine, topics, tmp_path) as running:
        yield running


@contextmanager
def running_stack(infra: Infra, stack_engine: Engine, topics: TopicSettings, logs: Path,
                  extra_env: Mapping[str, str] | None = None) -> Iterator[Stack]:
    """A started stack on the given schema and topics (and settings, `extra_env`), stopped on exit."""
    running = Stack(infra=infra, topics=topics, logs=logs, extra_env=dict(extra_env or {}),
                    database_url=stack_engine.url.render_as_string(hide_password=False))
    try:
        running.up()
        yield running
    finally:
        running.down()
