"""Fixtures of the chaos tier: a chaos stack its tests share, a private broker reached only
through a toxiproxy proxy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.network import Toxiproxy, toxiproxy_binary
from chaos.stack import ROOT, ChaosStack
from tests.conftest import Infra
from tests.private_kafka import PrivateKafka
from tests.servers import free_port


@pytest.fixture(scope="package")
def chaos_stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    """One chaos stack (no proxies) for the tier's tests: the short seed runs on it first, then the
    graceful stops. Each test had one of its own: three stack starts of half a minute each (a
    broker and eleven processes on 2 cores) where one does; every test still checks its own jobs,
    and the seed's dead-letter count is the stack's (`ChaosStack.poisoned`)."""
    running = ChaosStack(infra.database_url, tmp_path_factory.mktemp("chaos") / "stack")
    try:
        running.up()
        yield running
    finally:
        running.down()
        running.drop()


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[tuple[Toxiproxy, PrivateKafka]]:
    proxy = Toxiproxy(toxiproxy_binary(ROOT), tmp_path / "toxiproxy.log")
    proxy.start()
    broker = PrivateKafka(tmp_path / "kafka", port=free_port())
    broker.advertised_port = proxy.proxy("kafka", broker.port)
    try:
        broker.start()
        yield proxy, broker
    finally:
        broker.stop()
        proxy.stop()
