"""Fixtures the integration tests share: a gateway, a path to PostgreSQL that can go dark."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, make_url

from lotlens_common.settings import ServiceSettings
from tests.conftest import Infra
from tests.dark_path import DarkPath, dark_path
from tests.integration.gateway_support import Gateway, running_gateway


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
