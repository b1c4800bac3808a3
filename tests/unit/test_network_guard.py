"""The tests' DNS guard refuses names, lets loopback through, and tells which test asked."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests import network_guard


def test_a_name_is_refused_without_a_query_and_recorded() -> None:
    with pytest.raises(socket.gaierror, match="no name but loopback"):
        socket.getaddrinfo("hooks.example.com", 443)
    with pytest.raises(socket.gaierror):
        asyncio.run(_lookup("img.example.com"))  # the event loop's lookup, as httpx2 and the guard make it
    assert network_guard.ASKED == ["hooks.example.com", "img.example.com"]
    network_guard.ASKED.clear()  # asked on purpose: the autouse check would fail this test


def test_loopback_names_and_addresses_resolve() -> None:
    for host in ("localhost", "127.0.0.1", "::1"):
        assert socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)
    assert network_guard.ASKED == []


async def _lookup(host: str) -> object:
    return await asyncio.get_running_loop().getaddrinfo(host, 80)
