"""Fixtures of the end-to-end tier: a whole stack per test, plus image host and webhook receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lotlens_common.settings import TopicSettings
from tests.conftest import Infra
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
def stack(infra: Infra, engine: object, topics: TopicSettings, tmp_path: Path) -> Iterator[Stack]:
    """The five services and the OpenAI stand-in as processes, on this test's topics."""
    running = Stack(infra=infra, topics=topics, logs=tmp_path)
    try:
        running.up()
        yield running
    finally:
        running.down()
