"""httpx2 transports over an httpcore2 connection pool built here, with public API only.

httpx2's own transports build their pool without a `network_backend` parameter, and the SSRF
guard has to sit in the network backend (after DNS resolution, before the socket connects). So
these transports own a public `httpcore2.ConnectionPool` / `AsyncConnectionPool` with the backend
they are given, and translate requests, response bodies and errors through public names of
both packages only: an upgrade of either cannot silently route around the guard.
They never read proxy variables (there is no proxy parameter at all).
"""

from __future__ import annotations

import functools
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore2
import httpx2

# Each error httpcore2 raises -> the httpx2 class a client's caller catches. Looked up along the
# raised class's MRO, so the most specific entry wins (BlockedDestination -> ConnectError).
ERRORS: dict[type[Exception], type[httpx2.TransportError]] = {
    httpcore2.ConnectTimeout: httpx2.ConnectTimeout,
    httpcore2.ReadTimeout: httpx2.ReadTimeout,
    httpcore2.WriteTimeout: httpx2.WriteTimeout,
    httpcore2.PoolTimeout: httpx2.PoolTimeout,
    httpcore2.TimeoutException: httpx2.TimeoutException,
    httpcore2.ConnectError: httpx2.ConnectError,
    httpcore2.ReadError: httpx2.ReadError,
    httpcore2.WriteError: httpx2.WriteError,
    httpcore2.NetworkError: httpx2.NetworkError,
    httpcore2.ProxyError: httpx2.ProxyError,
    httpcore2.UnsupportedProtocol: httpx2.UnsupportedProtocol,
    httpcore2.LocalProtocolError: httpx2.LocalProtocolError,
    httpcore2.RemoteProtocolError: httpx2.RemoteProtocolError,
    httpcore2.ProtocolError: httpx2.ProtocolError,
}

_SSL_LOCK = threading.Lock()


def shared_ssl_context() -> ssl.SSLContext:
    """One verifying TLS context (system defaults, no `SSL_CERT_*` variables) for every transport."""
    # Loading the CA bundle takes milliseconds; the dispatcher builds a transport per attempt
    # thread, and 64 threads starting at once each loaded it before this lock.
    with _SSL_LOCK:
        return _build_ssl_context()


@functools.cache
def _build_ssl_context() -> ssl.SSLContext:
    return httpx2.create_ssl_context(trust_env=False)


@contextmanager
def httpx_errors() -> Iterator[None]:
    """Re-raise an httpcore2 error as its httpx2 counterpart (the original kept as the cause)."""
    try:
        yield
    except Exception as exc:
        for kind in type(exc).__mro__:
            target = ERRORS.get(kind)
            if target is not None:
                raise target(str(exc)) from exc
        raise


def _core_request(request: httpx2.Request) -> httpcore2.Request:
    url = request.url
    return httpcore2.Request(
        method=request.method,
        url=httpcore2.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
        headers=request.headers.raw, content=request.stream, extensions=request.extensions)


class _Body(httpx2.SyncByteStream):
    """A pooled response's body, with httpcore2's errors translated; closing returns the connection."""

    def __init__(self, core: httpcore2.Response) -> None:
        self.core = core

    def __iter__(self) -> Iterator[bytes]:
        with httpx_errors():
            yield from self.core.iter_stream()

    def close(self) -> None:
        with httpx_errors():
            self.core.close()


class _AsyncBody(httpx2.AsyncByteStream):
    """The async twin of `_Body`."""

    def __init__(self, core: httpcore2.Response) -> None:
        self.core = core

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with httpx_errors():
            async for chunk in self.core.aiter_stream():
                yield chunk

    async def aclose(self) -> None:
        with httpx_errors():
            await self.core.aclose()


def _pool_options(limits: httpx2.Limits, ssl_context: ssl.SSLContext | None) -> dict[str, Any]:
    """The settings httpx2.HTTPTransport gives its pool (HTTP/1.1, no retries), for both pools."""
    return {"ssl_context": ssl_context or shared_ssl_context(), "max_connections": limits.max_connections,
            "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry}


class PoolTransport(httpx2.BaseTransport):
    """A blocking transport: HTTP/1.1 over a connection pool that connects through `backend`."""

    def __init__(self, backend: httpcore2.NetworkBackend, limits: httpx2.Limits,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.pool = httpcore2.ConnectionPool(**_pool_options(limits, ssl_context), network_backend=backend)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send one request on a pooled connection."""
        with httpx_errors():
            core = self.pool.handle_request(_core_request(request))
        return httpx2.Response(core.status, headers=core.headers, stream=_Body(core),
                               extensions=core.extensions)

    def close(self) -> None:
        """Close every pooled connection."""
        with httpx_errors():
            self.pool.close()


class AsyncPoolTransport(httpx2.AsyncBaseTransport):
    """An asyncio transport: HTTP/1.1 over a connection pool that connects through `backend`."""

    def __init__(self, backend: httpcore2.AsyncNetworkBackend, limits: httpx2.Limits,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.pool = httpcore2.AsyncConnectionPool(**_pool_options(limits, ssl_context),
                                                  network_backend=backend)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send one request on a pooled connection."""
        with httpx_errors():
            core = await self.pool.handle_async_request(_core_request(request))
        return httpx2.Response(core.status, headers=core.headers, stream=_AsyncBody(core),
                               extensions=core.extensions)

    async def aclose(self) -> None:
        """Close every pooled connection."""
        with httpx_errors():
            await self.pool.aclose()
