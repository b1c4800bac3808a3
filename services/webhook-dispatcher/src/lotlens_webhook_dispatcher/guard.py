"""SSRF guard for webhook URLs: only public addresses, checked when the connection is opened.

The synchronous twin of `lotlens_common.urls.GuardedAsyncTransport` (the same rule,
`address_refusal`, and the same error, `BlockedDestination`): webhook attempts run on threads.
The check sits in the network backend, after DNS resolution, and the socket connects to the very
address that was checked, so a DNS answer that changes between check and connect (rebinding)
cannot slip through. Redirects are never followed, so there is nothing to re-check. TLS still
verifies the certificate against the host name in the URL. Proxies from the environment are
ignored: a proxy would connect on our behalf, unchecked.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

from lotlens_common.urls import BlockedDestination, address_refusal

Resolver = Callable[..., list[tuple[Any, ...]]]


class GuardedBackend(httpcore.SyncBackend):
    """Resolves the host itself, refuses non-public addresses, connects to the checked one."""

    def __init__(self, allow_loopback: bool, resolve: Resolver = socket.getaddrinfo) -> None:
        self._allow_loopback = allow_loopback
        self._resolve = resolve

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        """Open a TCP connection to a checked address of `host`."""
        try:
            infos = self._resolve(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        for address in addresses:
            reason = address_refusal(address, self._allow_loopback)
            if reason:
                raise BlockedDestination(f"{host} resolves to {address}, a {reason} address: refused")
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
        return super().connect_tcp(str(addresses[0]), port, timeout, local_address, socket_options)


_SSL_LOCK = threading.Lock()


def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes milliseconds; every transport (one per attempt thread) shares
    # one. Under the lock: 64 attempt threads starting at once each loaded it otherwise.
    with _SSL_LOCK:
        return _build_ssl_context()


@functools.cache
def _build_ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context(trust_env=False)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's own transport with the guarded backend underneath."""

    def __init__(self, allow_loopback: bool, limits: httpx.Limits,
                 resolve: Resolver = socket.getaddrinfo) -> None:
        super().__init__(verify=_ssl_context(), limits=limits, trust_env=False)
        # httpx builds its pool without a backend parameter; rebuild it the same way, with ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(allow_loopback, resolve),
        )
