"""A network fault fired when bytes crossed its proxy while the toxic was on, whatever the
connections' lifetimes: the services hold their connections to Kafka and PostgreSQL open for the
whole run, and toxiproxy counts a connection's bytes only when it ends. Run against a real
toxiproxy in front of a loopback echo server, with one long-lived client as a service has."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.network import Toxiproxy, toxiproxy_binary
from chaos.stack import ROOT


def _echo(listener: socket.socket) -> None:
    """Echo every connection's bytes back until it closes."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return  # the listener closed: the test is over
        threading.Thread(target=_echo_one, args=(conn,), daemon=True).start()


def _echo_one(conn: socket.socket) -> None:
    with conn:
        while chunk := conn.recv(4096):
            conn.sendall(chunk)


@pytest.fixture
def echo_proxy(tmp_path: Path) -> Iterator[Toxiproxy]:
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_echo, args=(listener,), daemon=True).start()
    network = Toxiproxy(toxiproxy_binary(ROOT), tmp_path / "toxiproxy.log")
    network.start()
    try:
        network.proxy("echo", listener.getsockname()[1])
        yield network
    finally:
        network.stop()
        listener.close()


def _client(port: int) -> socket.socket:
    """A connection through the proxy, used once before any fault (as a pooled one was)."""
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(b"hello")
    assert client.recv(16) == b"hello"
    return client


def _talk_until(client: socket.socket, stop: threading.Event) -> None:
    """Round trips on one open connection, a few a second, as a polling consumer makes."""
    while not stop.is_set():
        client.sendall(b"ping")
        client.recv(16)
        stop.wait(0.1)


@pytest.mark.parametrize("kind", ["net-latency", "net-bandwidth"])
def test_a_fault_fires_on_traffic_over_a_connection_that_outlives_it(
        echo_proxy: Toxiproxy, kind: str) -> None:
    stop = threading.Event()
    with _client(echo_proxy.ports["echo"]) as client:
        talker = threading.Thread(target=_talk_until, args=(client, stop))
        talker.start()
        try:
            assert echo_proxy.hold("echo", kind, 1.5)
        finally:
            stop.set()
            talker.join()


def test_a_fault_on_an_open_but_silent_connection_is_not_fired(echo_proxy: Toxiproxy) -> None:
    with _client(echo_proxy.ports["echo"]):
        assert not echo_proxy.hold("echo", "net-latency", 1.0)


def test_a_connection_that_talked_before_and_closes_quietly_during_the_fault_does_not_fire_it(
        echo_proxy: Toxiproxy) -> None:
    # Its bytes were counted by toxiproxy when it closed, during the hold: they crossed before it.
    client = _client(echo_proxy.ports["echo"])
    threading.Timer(0.3, client.close).start()
    assert not echo_proxy.hold("echo", "net-latency", 1.0)
