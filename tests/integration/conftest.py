"""Fixtures the integration tests share: a gateway, a path to PostgreSQL that can go dark."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, make_url

from lotlens_common.settings import ServiceSettings
from tests.conftest import Infra
from tests.dark_path import DarkPath, dark_path
from tests.integration.gateway_support import Gateway, running_gateway
from tests.servers import image_host
from tests.standin import Standin, serve_standin


@pytest.fixture()
def gateway(settings: ServiceSettings, engine: Engine) -> Iterator[Gateway]:
    """A gateway with default settings on this test's topics (a module overrides it for others)."""
    with running_gateway(settings, engine) as running:
        yield running


@pytest.fixture()
def database_path(infra: Infra) -> Iterator[DarkPath]:
    """A lit path to the tests' PostgreSQL that the test can make go dark (`tests/dark_path.py`)."""
    with dark_path(make_url(infra.database_url).port or 5432) as lit:
        yield lit


@pytest.fixture()
def standin(tmp_path: Path) -> Iterator[Standin]:
    """An OpenAI stand-in of the test's own, held to the OpenAI description (a module may override it)."""
    with serve_standin(tmp_path) as running:
        yield running


@pytest.fixture()
def images() -> Iterator[str]:
    """The base URL of an image host (tests/servers.py `image_host`)."""
    with image_host() as url:
        yield url
