"""Fixtures of the chaos tier: a private broker reached only through a toxiproxy proxy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.network import Toxiproxy, toxiproxy_binary
from chaos.stack import ROOT
from tests.private_kafka import PrivateKafka
from tests.servers import free_port


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
