"""Shares: bounded places, each requester within its own share, waiting only in its own line."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx2
import pytest

from lotlens_common.images import check_images
from lotlens_common.lookups import on_behalf_of
from lotlens_common.shares import Shares
from lotlens_common.urls import IPAddress

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 40


def test_a_requester_past_its_share_waits_while_another_takes_a_free_place() -> None:
    async def run() -> tuple[int, int]:
        shares = Shares(total=3, per_requester=2)
        await shares.take("acme")
        await shares.take("acme")
        waiting = asyncio.ensure_future(shares.take("acme"))
        await asyncio.sleep(0)
        assert not waiting.done()
        await asyncio.wait_for(shares.take("other"), 1)  # not behind acme's line
        shares.free("acme")
        await asyncio.wait_for(waiting, 1)
        return shares.held("acme"), shares.held("other")

    assert asyncio.run(run()) == (2, 1)


def test_a_freed_place_goes_to_the_first_in_line_that_fits() -> None:
    async def run() -> None:
        shares = Shares(total=2, per_requester=1)
        await shares.take("acme")
        await shares.take("other")
        acme_again = asyncio.ensure_future(shares.take("acme"))
        third = asyncio.ensure_future(shares.take("third"))
        await asyncio.sleep(0)
        shares.free("other")  # acme is first in line but holds its share: the place is third's
        await asyncio.wait_for(third, 1)
        assert not acme_again.done()
        shares.free("acme")
        await asyncio.wait_for(acme_again, 1)

    asyncio.run(run())


def test_a_caller_that_gives_up_waiting_leaves_nothing_behind() -> None:
    async def run() -> None:
        shares = Shares(total=1, per_requester=1)
        await shares.take("acme")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(shares.take("other"), 0.05)
        shares.free("acme")
        assert shares.held("other") == 0
        async with shares.hold("other"):
            assert shares.held("other") == 1
        assert shares.held("other") == 0

    asyncio.run(run())


async def _loopback(_host: str, _port: int) -> list[IPAddress]:
    return [ipaddress.ip_address("127.0.0.1")]


def test_an_image_checks_time_starts_once_it_has_a_place_of_its_clients_share() -> None:
    # Timed from before its wait, an image queued behind another client's checks was "no answer".
    def answer(request: httpx2.Request) -> httpx2.Response:
        body = b"" if request.method == "HEAD" else PNG
        return httpx2.Response(200, headers={"Content-Type": "image/png", "Content-Length": str(len(PNG))},
                               stream=httpx2.ByteStream(body))

    async def run() -> tuple[str, ...]:
        shares = Shares(total=1, per_requester=1)
        await shares.take("acme")
        asyncio.get_running_loop().call_later(0.5, shares.free, "acme")
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as client:
            with on_behalf_of("other"):
                check = await check_images(["http://127.0.0.1/car.png"], client, allow_loopback=True,
                                           resolve=_loopback, timeout_s=0.2, shares=shares)
        assert shares.held("other") == 0
        return check.valid

    assert asyncio.run(run()) == ("http://127.0.0.1/car.png",)
