"""The batch stages against PostgreSQL, Kafka and the stand-in, each test in a schema of its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from lotlens_common.settings import DatabaseSettings, ServiceSettings
from tests.conftest import Infra, own_schema
from tests.standin import Standin, serve_standin


@pytest.fixture()
def engine(infra: Infra, engine: Engine) -> Iterator[Engine]:
    """A schema of this test's own: no other test's open shards (their stand-in gone) can pause
    the stage here or count against its token budget."""
    with own_schema(infra, engine) as own:
        yield own


@pytest.fixture()
def settings(settings: ServiceSettings, engine: Engine) -> ServiceSettings:
    """The test's settings with its own schema, for the stage processes some tests start."""
    own = DatabaseSettings(DATABASE_URL=engine.url.render_as_string(hide_password=False))
    return settings.model_copy(update={"database": own})


@pytest.fixture()
def standin(tmp_path: Path) -> Iterator[Standin]:
    """A stand-in of the test's own (its stats count this test's batches only)."""
    with serve_standin(tmp_path / "standin") as running:
        yield running
