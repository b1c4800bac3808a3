"""Local servers the unit tests of image checks share (loopback only)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import SilentServer, image_host, silent_server


@pytest.fixture()
def tarpit() -> Iterator[SilentServer]:
    """A host that accepts connections and never sends a byte."""
    with silent_server() as server:
        yield server


@pytest.fixture()
def images() -> Iterator[str]:
    """Base URL of a local image host."""
    with image_host() as url:
        yield url
