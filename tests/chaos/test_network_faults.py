"""The chaos run's network faults do what they say: a toxiproxy proxy in front of the test
PostgreSQL passes queries, and each fault kind breaks or slows them until it is cleared; a broker
advertising its proxy's address is reached only through that proxy, so a fault there holds up a
client already connected."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from chaos.network import Toxiproxy, toxiproxy_binary
from chaos.stack import ROOT
from tests.conftest import Infra
from tests.private_kafka import PrivateKafka


@pytest.fixture
def proxied(infra: Infra, tmp_path: Path) -> Iterator[tuple[Toxiproxy, Engine]]:
    proxy = Toxiproxy(toxiproxy_binary(ROOT), tmp_path / "toxiproxy.log")
    proxy.start()
    try:
        port = proxy.proxy("postgres", make_url(infra.database_url).port or 5432)
        url = make_url(infra.database_url).set(port=port)
        # No pool: every query opens a connection through the proxy, as a reconnecting service does.
        engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})
        yield proxy, engine
        engine.dispose()
    finally:
        proxy.stop()


def _query(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT 1")).scalar_one())


@pytest.mark.parametrize("kind", ["net-reset", "net-timeout"])
def test_a_cutting_fault_breaks_queries_until_cleared(proxied: tuple[Toxiproxy, Engine], kind: str) -> None:
    proxy, engine = proxied
    assert _query(engine) == 1
    engine.dispose()
    proxy.add("postgres", kind)
    with pytest.raises(OperationalError):
        _query(engine)
    proxy.clear("postgres", kind)
    assert _recovers(engine)


def _recovers(engine: Engine) -> bool:
    """A query through the proxy works again within a generous bound (a reconnecting service)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            return _query(engine) == 1
        except OperationalError:
            time.sleep(0.5)
    return False


def test_latency_slows_every_round_trip(proxied: tuple[Toxiproxy, Engine]) -> None:
    proxy, engine = proxied
    engine.dispose()
    proxy.add("postgres", "net-latency")
    started = time.monotonic()
    assert _query(engine) == 1
    # A lower bound only: the toxic adds at least 150 ms each way to each of the round trips.
    assert time.monotonic() - started >= 0.5
    proxy.clear("postgres", "net-latency")


def test_cut_bandwidth_slows_a_large_answer(proxied: tuple[Toxiproxy, Engine]) -> None:
    proxy, engine = proxied
    engine.dispose()
    proxy.add("postgres", "net-bandwidth")
    started = time.monotonic()
    with engine.connect() as conn:
        answer = conn.execute(text("SELECT repeat('x', 20000)")).scalar_one()
    # 20 KB at 4 KB/s: a lower bound of a few seconds, whatever the machine's speed.
    assert len(answer) == 20000 and time.monotonic() - started >= 2.0
    proxy.clear("postgres", "net-bandwidth")


def test_a_fault_fires_on_queries_over_a_pooled_connection(proxied: tuple[Toxiproxy, Engine]) -> None:
    # A service's pool keeps its connection for the whole run: toxiproxy counts its bytes only when
    # it closes, so on its counters alone this fault read as not fired.
    proxy, unpooled = proxied
    pooled = create_engine(unpooled.url, pool_size=1, max_overflow=0)
    stop = threading.Event()

    def query_until_stopped() -> None:
        while not stop.is_set():
            _query(pooled)
            stop.wait(0.1)

    _query(pooled)
    querying = threading.Thread(target=query_until_stopped)
    querying.start()
    try:
        assert proxy.hold("postgres", "net-bandwidth", 1.5)
    finally:
        stop.set()
        querying.join()
        pooled.dispose()


def test_a_connected_kafka_client_is_held_up_by_a_fault_on_the_brokers_proxy(
        proxied_broker: tuple[Toxiproxy, PrivateKafka]) -> None:
    proxy, broker = proxied_broker
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = NewTopic("chaos-net", num_partitions=1, replication_factor=1)
    admin.create_topics([topic])["chaos-net"].result(60)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce("chaos-net", b"before")
    assert producer.flush(60) == 0
    # Connected to the address the broker advertised: were that its own port, this fault on the
    # proxy would not touch the producer and the message would be acknowledged at once.
    proxy.add("kafka", "net-timeout")
    failures: list[object] = []
    producer.produce("chaos-net", b"during", on_delivery=lambda err, _msg: failures.append(err))
    assert producer.flush(5) == 1
    proxy.clear("kafka", "net-timeout")
    assert producer.flush(120) == 0 and failures == [None]
