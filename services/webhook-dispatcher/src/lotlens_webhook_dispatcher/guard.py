"""SSRF guard for webhook URLs: only public addresses, checked when the connection is opened.

The synchronous twin of `lotlens_common.urls.GuardedAsyncBackend` (the same rule,
`address_refusal`, and the same error, `BlockedDestination`): webhook attempts run on threads.
The check sits in the network backend, after DNS resolution, and the socket connects to the very
address that was checked, so a DNS answer that changes between check and connect (rebinding)
cannot slip through. Redirects are never followed, so there is nothing to re-check. TLS still
verifies the certificate against the host name in the URL. Proxies from the environment are
ignored: a proxy would connect on our behalf, unchecked.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any

import httpcore2
import httpx2

from lotlens_common.pool_transport import PoolTransport
from lotlens_common.urls import BlockedDestination, address_refusal

Resolver = Callable[..., list[tuple[Any, ...]]]


class GuardedBackend(httpcore2.NetworkBackend):
    """Resolves the host itself, refuses non-public addresses, connects to the checked one."""

    def __init__(self, allow_loopback: bool, resolve: Resolver = socket.getaddrinfo) -> None:
        self._allow_loopback = allow_loopback
        self._resolve = resolve
        self._inner = httpcore2.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore2.NetworkStream:
        """Open a TCP connection to a checked address of `host`."""
        try:
            infos = self._resolve(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore2.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        for address in addresses:
            reason = address_refusal(address, self._allow_loopback)
            if reason:
                raise BlockedDestination(f"{host} resolves to {address}, a {reason} address: refused")
        if not addresses:
            raise httpcore2.ConnectError(f"{host} has no address")
        return self._inner.connect_tcp(str(addresses[0]), port, timeout, local_address, socket_options)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore2.NetworkStream:
        """Unix sockets are local by definition: always refused."""
        raise BlockedDestination("unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        """Delegate to the blocking backend."""
        self._inner.sleep(seconds)


class GuardedTransport(PoolTransport):
    """A pooled transport whose every connection goes through `GuardedBackend`."""

    def __init__(self, allow_loopback: bool, limits: httpx2.Limits,
                 resolve: Resolver = socket.getaddrinfo) -> None:
        super().__init__(GuardedBackend(allow_loopback, resolve), limits)
