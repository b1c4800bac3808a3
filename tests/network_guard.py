"""Tests ask no DNS server anything: a name lookup in the test process that is not for loopback
fails as an unknown name, and the test that made it fails too (stub the resolver instead).

Only this process is guarded; the services an end-to-end test starts get loopback URLs only.
`make smoke-openai` (LOTLENS_SMOKE_OPENAI=1), which talks to the real API, runs unguarded.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from lotlens_common.urls import BlockedDestination, IPAddress, Resolver

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
ASKED: list[str] = []
_real_getaddrinfo = socket.getaddrinfo


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%")[0])
        return True
    except ValueError:
        return False


def _guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name is None or name.lower() in LOOPBACK_NAMES or _is_address(name):
        return _real_getaddrinfo(host, *args, **kwargs)
    name.encode("idna")  # as the real call does first: a name it cannot encode is refused the same way
    ASKED.append(name)
    raise socket.gaierror(socket.EAI_NONAME, f"the tests resolve no name but loopback ones: {name!r}")


def install() -> None:
    """Route every lookup of this process through the guard."""
    socket.getaddrinfo = _guarded


def stub_resolver(names: dict[str, str]) -> Resolver:
    """A resolver answering from `names` (host -> address); no other name resolves.

    No DNS query leaves the machine. Map a name to a public address only for a webhook judged at
    intake: an image host is connected to.
    """
    async def resolve(host: str, _port: int) -> list[IPAddress]:
        if host not in names:
            # As `urls.resolve_host` reports a name the resolver does not know.
            raise BlockedDestination(f"cannot resolve {host}: not a name these tests know") from (
                socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
        return [ipaddress.ip_address(names[host])]

    return resolve
