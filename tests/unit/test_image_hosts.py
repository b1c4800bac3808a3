"""A client's image host whose tries get no answer is taken as down a while (`image_hosts.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from lotlens_common.image_hosts import HostHealth
from lotlens_common.images import ImageCheck, check_images
from lotlens_common.lookups import on_behalf_of
from lotlens_common.urls import guarded_async_client
from tests.servers import SilentServer, image_host, silent_server

TIMEOUT_S = 0.3
DEAD = "http://dead.example/a.png"


@pytest.fixture()
def tarpit() -> Iterator[SilentServer]:
    with silent_server() as server:
        yield server


@pytest.fixture()
def images() -> Iterator[str]:
    with image_host() as url:
        yield url


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


def test_a_host_is_down_after_three_unanswered_tries_in_a_row_and_an_answer_starts_the_count_over() -> None:
    clock = Clock()
    hosts = HostHealth(3, 60.0, clock=clock)
    for _ in range(2):
        hosts.failed("c1", DEAD)
    hosts.answered("c1", "http://DEAD.example/other.png")  # the same host, spelt otherwise
    for _ in range(2):
        hosts.failed("c1", DEAD)
    assert hosts.down("c1", DEAD) is None
    hosts.failed("c1", "http://dead.example/b.png")
    assert hosts.down("c1", DEAD) == "its host gave no answer to 3 tries in a row; not tried again for 60 s"
    assert hosts.down("c1", "https://dead.example/a.png") is None, "another port is another host"
    assert hosts.down("c2", DEAD) is None, "another client's images on that host are still tried"
    clock.now = 60.0
    assert hosts.down("c1", DEAD) is None, "tried again after the pause"
    hosts.failed("c1", DEAD)
    assert hosts.down("c1", DEAD) is not None, "down again at the first try that gets no answer"


def test_zero_failures_to_down_turns_the_memory_off() -> None:
    hosts = HostHealth(0, 60.0)
    for _ in range(10):
        hosts.failed("c1", DEAD)
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
