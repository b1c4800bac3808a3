"""DNS lookups on threads of their own: a share per requester, counted until each thread returns."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Sequence
from typing import Any

import httpx2
import pytest

from lotlens_common.images import ImageCheck
from lotlens_common.lookups import Lookups, on_behalf_of
from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage.work import LotWork, VisionWork
from lotlens_vision_batcher.vision_stage import RecentChecks, VisionStage

ANSWER = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443))]


class Resolver:
    """A `getaddrinfo`: names under `slow.test` block until `release()`; others answer at once."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self._released = threading.Event()

    def __call__(self, host: str, _port: int, **_kwargs: Any) -> list[tuple[Any, ...]]:
        self.asked.append(host)
        if host.endswith(".slow.test"):
            self._released.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return ANSWER

    def release(self) -> None:
        self._released.set()


async def lookup(lookups: Lookups, requester: str, host: str) -> list[tuple[Any, ...]]:
    with on_behalf_of(requester):
        return await lookups.getaddrinfo(host, 443)


async def until(condition: Any) -> None:
    # Polled: the threads that change what it reads know of no event loop.
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def test_a_requester_whose_dns_never_answers_holds_only_its_own_share() -> None:
    resolver = Resolver()
    lookups = Lookups(threads=4, per_requester=2, getaddrinfo=resolver)

    async def scenario() -> None:
        slow = [asyncio.ensure_future(lookup(lookups, "mallory", f"h{n}.slow.test"))
                for n in range(10)]
        await until(lambda: lookups.in_flight("mallory")[0] == 2)
        assert await lookup(lookups, "alice", "img.example") == ANSWER
        assert len(resolver.asked) == 3  # the other eight wait in line, on no thread
        resolver.release()
        for task in slow:
            with pytest.raises(socket.gaierror):
                await task

    try:
        asyncio.run(scenario())
    finally:
        resolver.release()
    assert lookups.in_flight("mallory") == (0, 0)


def test_lookups_given_up_on_count_until_their_threads_return_and_then_refuse_at_once() -> None:
    resolver = Resolver()
    lookups = Lookups(threads=4, per_requester=2, getaddrinfo=resolver)

    async def scenario() -> None:
        for n in range(2):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await lookup(lookups, "mallory", f"h{n}.slow.test")
        assert lookups.in_flight("mallory") == (2, 2)
        # Not queued behind its dead lookups: refused now, "try again".
        with pytest.raises(socket.gaierror) as refused:
            await lookup(lookups, "mallory", "img.example")
        assert refused.value.errno == socket.EAI_AGAIN
        assert resolver.asked == ["h0.slow.test", "h1.slow.test"]
        resolver.release()  # the system resolver finally gives up: the share is back
        await until(lambda: lookups.in_flight("mallory") == (0, 0))
        assert await lookup(lookups, "mallory", "img.example") == ANSWER

    try:
        asyncio.run(scenario())
    finally:
        resolver.release()


def test_a_lookup_given_up_on_while_waiting_in_line_takes_no_thread() -> None:
    resolver = Resolver()
    lookups = Lookups(threads=2, per_requester=2, getaddrinfo=resolver)

    async def scenario() -> None:
        running = [asyncio.ensure_future(lookup(lookups, "a", f"h{n}.slow.test")) for n in range(2)]
        await until(lambda: len(resolver.asked) == 2)
        with pytest.raises(TimeoutError):  # every thread is taken: it waits, then its caller gives up
            async with asyncio.timeout(0.1):
                await lookup(lookups, "b", "late.slow.test")
        resolver.release()
        await asyncio.gather(*running, return_exceptions=True)
        assert await lookup(lookups, "b", "img.example") == ANSWER

    try:
        asyncio.run(scenario())
    finally:
        resolver.release()
    assert "late.slow.test" not in resolver.asked
    assert lookups.in_flight("a") == lookups.in_flight("b") == (0, 0)


def test_the_vision_stage_looks_up_each_clients_image_hosts_within_that_clients_share() -> None:
    # A chunk holds lots of several jobs: one client's image hosts on a DNS that never answers
    # must not hold the lookups of another client's lots in the same (or the next) chunk.
    resolver = Resolver()
    lookups = Lookups(threads=4, per_requester=1, getaddrinfo=resolver)

    async def resolving_check(urls: Sequence[str]) -> ImageCheck:
        try:
            async with asyncio.timeout(2):
                await lookups.getaddrinfo(httpx2.URL(urls[0]).host, 443)
        except (TimeoutError, OSError) as exc:
            return ImageCheck(valid=(), unreachable=tuple(urls), reasons=dict.fromkeys(urls, repr(exc)))
        return ImageCheck(valid=tuple(urls), unreachable=(), sizes=dict.fromkeys(urls, 1000))

    def lot(client_id: str, url: str) -> LotWork[VisionWork]:
        return LotWork(f"job-{client_id}", f"lot-{client_id}", client_id, 1, 1, VisionWork(
            additional_info="Camry", image_urls=(url,), languages=("en",)))

    stage = VisionStage("vision", ModelSettings(), resolving_check, recent=RecentChecks(ttl_s=0))
    try:
        prepared = asyncio.run(stage.prepare([lot("mallory", "https://h0.slow.test/1.jpg"),
                                              lot("alice", "https://img.example/1.jpg")]))
    finally:
        resolver.release()
    assert [request.client_id for request, _ in prepared.requests] == ["alice"]
    assert [settled.client_id for settled, _ in prepared.settled] == ["mallory"]

