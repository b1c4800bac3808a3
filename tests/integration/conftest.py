"""Fixtures the gateway's integration tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from lotlens_common.settings import ServiceSettings
from tests.integration.gateway_support import Gateway, running_gateway


@pytest.fixture()
def gateway(settings: ServiceSettings, engine: Engine) -> Iterator[Gateway]:
    """A gateway with default settings on this test's topics (a module overrides it for others)."""
    with running_gateway(settings, engine) as running:
        yield running
