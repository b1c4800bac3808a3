"""A network fault must meet traffic: a toxic on a proxy that nobody used while it was on tested
nothing, and is listed as not fired: neither counted as applied and then "recovered", nor a
violation (a quiet link is no defect). Run against a real toxiproxy in front of a loopback listener."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.network import Toxiproxy, received_bytes, toxiproxy_binary
from chaos.run import RunResult, inject
from chaos.schedule import Fault
from chaos.stack import ROOT, ChaosStack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ChaosStack]:
    listener = socket.create_server(("127.0.0.1", 0))
    network = Toxiproxy(toxiproxy_binary(ROOT), tmp_path / "toxiproxy.log", traffic_wait_s=1.0)
    network.start()
    try:
        network.proxy("standin", listener.getsockname()[1])
        running = ChaosStack("postgresql://unused/db", tmp_path)
        running.network = network
        yield running
    finally:
        network.stop()
        listener.close()


def _send_until(port: int, stop: threading.Event, after_s: float = 0.0) -> None:
    """A client sending through the proxy, one connection after another, until told to stop."""
    stop.wait(after_s)
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as client:
                client.sendall(b"ping")
        except OSError:
            pass  # the toxic's doing: a reset or a refused connection still passed its bytes
        stop.wait(0.05)


def test_a_network_fault_with_no_traffic_through_its_proxy_is_not_fired_not_a_violation(
    stack: ChaosStack,
) -> None:
    # The stand-in's link is quiet once the jobs drained (a batch submitted, a sync call, the
    # reconcile every 60 s): a fault held then met nothing. It tested nothing, and nothing is wrong.
    result = RunResult(seed=1)
    assert not inject(stack, Fault("net-timeout", "standin", hold_s=0.2, calm_s=0), result)
    assert result.violations == []
    assert result.not_fired == [("net-timeout:standin", "no traffic passed through its proxy while the "
                                                         "toxic was on, nor in the 1 s before")]


@pytest.mark.parametrize("kind", ["net-reset", "net-timeout"])
def test_a_network_fault_that_met_traffic_fires(stack: ChaosStack, kind: str) -> None:
    assert stack.network is not None
    stop = threading.Event()
    client = threading.Thread(target=_send_until, args=(stack.network.ports["standin"], stop))
    client.start()
    result = RunResult(seed=1)
    try:
        assert inject(stack, Fault(kind, "standin", hold_s=0.5, calm_s=0), result)
    finally:
        stop.set()
        client.join()
    assert (result.violations, result.not_fired) == ([], [])


def test_a_network_fault_starts_once_its_link_shows_traffic(stack: ChaosStack) -> None:
    # The link is quiet for longer than the hold, then busy (a batch reaching the stand-in): held
    # at once, the toxic would have been gone before the first byte.
    assert stack.network is not None
    stack.network.traffic_wait_s = 10.0
    stop = threading.Event()
    client = threading.Thread(target=_send_until, args=(stack.network.ports["standin"], stop, 1.5))
    client.start()
    result = RunResult(seed=1)
    try:
        assert inject(stack, Fault("net-reset", "standin", hold_s=0.25, calm_s=0), result)
    finally:
        stop.set()
        client.join()
    assert (result.violations, result.not_fired) == ([], [])


def test_only_the_named_proxys_client_bytes_count() -> None:
    name = "toxiproxy_proxy_received_bytes_total"
    metrics = "\n".join([
        f"# TYPE {name} counter",
        f'{name}{{direction="downstream",listener="l",proxy="standin",upstream="u"}} 7',
        f'{name}{{direction="upstream",listener="l",proxy="kafka",upstream="u"}} 11',
        f'{name}{{direction="upstream",listener="l",proxy="standin",upstream="u"}} 5',
    ])
    assert received_bytes(metrics, "standin") == 5
    assert received_bytes(metrics, "postgres") == 0
