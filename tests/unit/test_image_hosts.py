"""A client's image host whose tries get no answer is taken as down a while (`image_hosts.py`)."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable

import httpx2
import pytest
from prometheus_client import REGISTRY

from lotlens_common import images as images_module
from lotlens_common.image_hosts import HostHealth
from lotlens_common.images import ImageCheck, check_images
from lotlens_common.lookups import on_behalf_of
from lotlens_common.urls import IPAddress, LookupTryAgain, Resolver, guarded_async_client
from tests.servers import SilentServer

TIMEOUT_S = 0.3
DEAD = "http://dead.example/a.png"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _check(urls: list[str], hosts: HostHealth, client: str = "client-a") -> ImageCheck:
    async def run() -> ImageCheck:
        async with guarded_async_client(True, TIMEOUT_S) as http:
            with on_behalf_of(client):
                return await check_images(urls, http, True, 2, timeout_s=10, hosts=hosts)

    return asyncio.run(run())


def test_a_host_is_down_after_three_timed_out_tries_in_a_row_and_an_answer_starts_the_count_over() -> None:
    clock = Clock()
    hosts = HostHealth(3, 60.0, clock=clock)
    for _ in range(2):
        hosts.timed_out("c1", DEAD, began=0.0)
    hosts.answered("c1", "http://DEAD.example/other.png")  # the same host, spelt otherwise
    for _ in range(2):
        hosts.timed_out("c1", DEAD, began=0.0)
    assert hosts.down("c1", DEAD) is None
    hosts.timed_out("c1", "http://dead.example/b.png", began=0.0)
    assert hosts.down("c1", DEAD) == "its host gave no answer to 3 tries in a row; not tried again for 60 s"
    assert hosts.down("c1", "https://dead.example/a.png") is None, "another port is another host"
    assert hosts.down("c2", DEAD) is None, "another client's images on that host are still tried"
    clock.now = 60.0
    assert hosts.down("c1", DEAD) is None, "tried again after the pause"
    hosts.timed_out("c1", DEAD, began=60.0)
    assert hosts.down("c1", DEAD) is not None, "down again at the first try that gets no answer"


def test_tries_under_way_when_their_host_answered_do_not_count_when_they_time_out() -> None:
    clock = Clock()
    hosts = HostHealth(3, 60.0, clock=clock)
    clock.now = 5.0
    hosts.answered("c1", DEAD)
    for _ in range(3):
        hosts.timed_out("c1", DEAD, began=4.0)
    assert hosts.down("c1", DEAD) is None, "the host was up while they waited: slow, not silent"
    for _ in range(3):
        hosts.timed_out("c1", DEAD, began=5.0)
    assert hosts.down("c1", DEAD) is not None


def test_zero_failures_to_down_turns_the_memory_off() -> None:
    hosts = HostHealth(0, 60.0)
    for _ in range(10):
        hosts.timed_out("c1", DEAD, began=0.0)
    assert hosts.down("c1", DEAD) is None


def test_a_tarpit_hosts_images_are_unreachable_as_their_timeouts_made_them_only_without_the_waits(
        tarpit: SilentServer, images: str) -> None:
    dead = [f"http://127.0.0.1:{tarpit.port}/{i}.png" for i in range(12)]
    working = f"{images}/front.png"
    result = _check([dead[0], working, *dead[1:]], HostHealth(3, 60.0))

    assert result.valid == (working,)
    assert result.unreachable == tuple(dead)
    # Two at a time: two first tries and their retries half a second later; then the host was down.
    assert len(tarpit.accepted) <= 4
    assert result.reasons[dead[-1]].startswith("its host gave no answer to ")


def test_one_clients_tarpit_does_not_take_the_host_down_for_another_client(tarpit: SilentServer) -> None:
    hosts = HostHealth(3, 60.0)
    dead = [f"http://127.0.0.1:{tarpit.port}/{i}.png" for i in range(6)]
    _check(dead, hosts, client="client-a")
    before = len(tarpit.accepted)
    _check(dead[:1], hosts, client="client-b")
    assert len(tarpit.accepted) > before


PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)
Handler = Callable[[httpx2.Request], httpx2.Response]


def _png(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, headers={"content-type": "image/png", "content-length": str(len(PNG))},
                           stream=httpx2.ByteStream(PNG))


async def _public(host: str, port: int) -> list[IPAddress]:
    return [ipaddress.ip_address("93.184.216.34")]  # never connected to: the transport is a mock


def _mocked(urls: list[str], handler: Handler, resolve: Resolver = _public, concurrency: int = 64,
            timeout_s: float = 10.0) -> ImageCheck:
    async def run() -> ImageCheck:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as http:
            with on_behalf_of("client-a"):
                return await check_images(urls, http, False, concurrency, timeout_s=timeout_s,
                                          resolve=resolve, hosts=HostHealth(3, 60.0))

    return asyncio.run(run())


def _hosts_down() -> float:
    return REGISTRY.get_sample_value("lotlens_image_hosts_down_total") or 0.0


MANY = [f"https://img.example.com/{i}.png" for i in range(200)]


def test_a_blip_of_dropped_connections_takes_no_host_down_and_every_image_is_tried_again() -> None:
    """A load balancer restarting drops every connection for 0.2 s: 64 tries failed at once, and
    counted as 64 failures in a row the host was down for a minute, all 200 images unreachable."""
    began, down_before = time.monotonic(), _hosts_down()

    def restarting(request: httpx2.Request) -> httpx2.Response:
        if time.monotonic() - began < 0.2:
            raise httpx2.ConnectError("connection reset by peer", request=request)
        return _png(request)

    result = _mocked(MANY, restarting)

    assert len(result.valid) == 200, list(result.reasons.values())[:1]
    assert _hosts_down() == down_before


def test_one_dns_try_again_shared_by_a_hosts_images_takes_it_not_down() -> None:
    lookups = 0
    down_before = _hosts_down()

    async def hiccup(host: str, port: int) -> list[IPAddress]:
        nonlocal lookups
        lookups += 1
        await asyncio.sleep(0.05)
        if lookups == 1:
            raise LookupTryAgain("cannot resolve now: EAI_AGAIN")
        return await _public(host, port)

    result = _mocked(MANY, _png, hiccup)

    assert len(result.valid) == 200, list(result.reasons.values())[:1]
    assert _hosts_down() == down_before


def test_images_of_a_host_that_answers_slowly_out_of_their_time_do_not_take_it_down() -> None:
    # Each image is answered 503 (tried again after 0.5 s): its 0.3 s run out in the pause.
    def busy(request: httpx2.Request) -> httpx2.Response:
        return _png(request) if request.url.path == "/ok.png" else httpx2.Response(503)

    busy_urls = [f"https://img.example.com/{i}.png" for i in range(3)]
    result = _mocked([*busy_urls, "https://img.example.com/ok.png"], busy, concurrency=3, timeout_s=0.3)

    assert result.valid == ("https://img.example.com/ok.png",), result.reasons


def test_a_redirect_to_a_host_that_never_answers_takes_that_host_down_not_the_redirecting_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images_module, "RETRY_PAUSES_S", (0.0, 0.0))

    def redirecting(request: httpx2.Request) -> httpx2.Response:
        if request.url.host == "b.example":
            raise httpx2.ConnectTimeout("timed out", request=request)
        if request.url.path == "/ok.png":
            return _png(request)
        return httpx2.Response(302, headers={"location": f"https://b.example{request.url.path}"})

    moved = [f"https://a.example/x{i}.png" for i in range(3)]
    result = _mocked([*moved, "https://a.example/ok.png"], redirecting, concurrency=1)

    assert result.valid == ("https://a.example/ok.png",), result.reasons
    assert result.reasons[moved[-1]].startswith("its host gave no answer"), "b.example is down"
