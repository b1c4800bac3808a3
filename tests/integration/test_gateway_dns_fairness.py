"""One client's slow DNS must not make another client's images unreachable.

Host names are looked up on threads (`getaddrinfo` blocks and cannot be interrupted). The gateway
once ran them on asyncio's default executor, `min(32, cpus + 4)` threads shared by everyone: a job
whose webhooks named 40 hosts on a domain whose DNS never answers, or an image check of 40 such
hosts, held every thread, and another client's working image came back "no answer within ...".

Here the system resolver is the process's real path with `socket.getaddrinfo` replaced: names
under `slow.test` block until the test ends (a DNS that never answers), `img.test` is loopback.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine

from lotlens_common import lookups
from lotlens_common.settings import ServiceSettings
from lotlens_common.urls import resolve_host
from tests.integration.gateway_support import Gateway, make_lots, running_gateway
from tests.polling import wait_for
from tests.servers import image_host

pytestmark = pytest.mark.integration

# More than asyncio's default executor ever has (32 threads), whatever the machine's cores.
SLOW_HOSTS = 40
IMAGE_TIMEOUT_S = 3.0


class SlowDomain:
    """A `getaddrinfo`: `*.slow.test` blocks until `release()`, `img.test` is 127.0.0.1, any
    other name goes to the resolver it replaced (the tests' guard, which resolves no name)."""

    def __init__(self, replaced: Any) -> None:
        self._replaced = replaced
        self._released = threading.Event()
        self._lock = threading.Lock()
        self.blocked = 0

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name.endswith(".slow.test"):
            with self._lock:
                self.blocked += 1
            self._released.wait(120)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return self._replaced("127.0.0.1" if name == "img.test" else host, port, *args, **kwargs)

    def release(self) -> None:
        """Let every blocked lookup end (as the system resolver finally does)."""
        self._released.set()

    def wait_blocked(self, count: int, timeout_s: float = 10.0) -> None:
        """Until at least `count` lookups are blocked."""
        wait_for(lambda: self.blocked >= count,
                 lambda: f"{count} slow lookups to start (only {self.blocked} did)", timeout_s=timeout_s,
                 every_s=0.02)


@pytest.fixture()
def slow_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowDomain]:
    slow = SlowDomain(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", slow)
    try:
        yield slow
    finally:
        slow.release()


@pytest.fixture()
def gateway(settings: ServiceSettings, engine: Engine, slow_dns: SlowDomain) -> Iterator[Gateway]:
    """A gateway on the system resolver's path (names looked up on threads by `getaddrinfo`)."""
    with running_gateway(settings, engine, resolve=resolve_host, image_check_timeout_s=IMAGE_TIMEOUT_S,
                         image_check_concurrency=SLOW_HOSTS) as running:
        try:
            yield running
        finally:
            slow_dns.release()  # before the gateway stops: its loop waits for nothing blocked


@pytest.fixture()
def images() -> Iterator[str]:
    with image_host() as url:
        yield url.replace("127.0.0.1", "img.test")


def image_check(gateway: Gateway, urls: list[str], key: str) -> dict[str, Any]:
    raw = json.dumps({"urls": urls}).encode()
    headers = {"X-Signature": gateway.sign(raw, key), "Content-Type": "application/json"}
    response = httpx2.post(f"{gateway.url}/api/v1/test-image-validation", content=raw, headers=headers,
                           timeout=60)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_job_whose_webhook_hosts_never_resolve_leaves_other_clients_images_reachable(
        gateway: Gateway, slow_dns: SlowDomain, images: str) -> None:
    lots = make_lots(SLOW_HOSTS)
    for n, lot in enumerate(lots):
        lot["webhook"] = f"https://h{n}.slow.test/hook"
    accepted = gateway.submit(lots)  # its hosts get no verdict in time: accepted, checked at delivery
    assert accepted.status_code == 201, accepted.text
    assert slow_dns.blocked >= 1

    working = f"{images}/car.png"
    body = image_check(gateway, [working], gateway.other_key)
    assert body["valid_urls"] == [working], body["reasons"]


def test_an_image_check_on_hosts_that_never_resolve_leaves_other_clients_images_reachable(
        gateway: Gateway, slow_dns: SlowDomain, images: str) -> None:
    slow_urls = [f"https://h{n}.slow.test/car.png" for n in range(SLOW_HOSTS)]
    with ThreadPoolExecutor(1) as pool:
        attacker = pool.submit(image_check, gateway, slow_urls, gateway.key)
        slow_dns.wait_blocked(4)
        working = f"{images}/car.png"
        body = image_check(gateway, [working], gateway.other_key)
        assert body["valid_urls"] == [working], body["reasons"]
        # The attacker's own check still ends, with its images unreachable.
        assert attacker.result(timeout=60)["unreachable_urls"] == slow_urls


def test_a_client_holds_one_share_of_lookup_threads_whatever_its_lookups_are_for(
        gateway: Gateway, slow_dns: SlowDomain) -> None:
    # With a share per purpose, a client's webhook hosts and its image checks held two shares, and
    # two clients held every thread of the defaults.
    per_client = lookups.shared().per_requester
    lots = make_lots(SLOW_HOSTS)
    for n, lot in enumerate(lots):
        lot["webhook"] = f"https://h{n}.slow.test/hook"
    assert gateway.submit(lots).status_code == 201
    slow_dns.wait_blocked(per_client)
    with ThreadPoolExecutor(1) as pool:
        checking = pool.submit(image_check, gateway, [f"https://i{n}.slow.test/car.png" for n in range(8)],
                               gateway.key)
        time.sleep(1.0)  # the old code's second share started its lookups within milliseconds
        assert slow_dns.blocked == per_client
        slow_dns.release()
        assert checking.result(timeout=60)["valid_urls"] == []
