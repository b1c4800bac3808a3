"""The pooled transports under both SSRF guards: TLS names, keep-alive, limits, timeouts, errors.

Every server here listens on 127.0.0.1; the resolvers send every name there (loopback allowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpcore2
import httpx2
import pytest
import trustme

from lotlens_common.pool_transport import ERRORS, AsyncPoolTransport, PoolTransport
from lotlens_common.urls import GuardedAsyncBackend, IPAddress, guarded_async_client
from lotlens_webhook_dispatcher.guard import GuardedBackend

HOST, OTHER = "hooks.example.test", "other.example.test"
LIMITS = httpx2.Limits(max_connections=4, max_keepalive_connections=4)


@dataclass
class Seen:
    connections: int = 0
    active: int = 0
    most_active: int = 0
    hosts: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def server(tls: ssl.SSLContext | None = None, delay_s: float = 0.0) -> Iterator[tuple[int, Seen]]:
    """An HTTP/1.1 server on a free loopback port counting connections and concurrent requests."""
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def setup(self) -> None:
            super().setup()
            with seen.lock:
                seen.connections += 1

        def do_GET(self) -> None:
            with seen.lock:
                seen.hosts.append(self.headers["Host"])
                seen.active += 1
                seen.most_active = max(seen.most_active, seen.active)
            time.sleep(delay_s)
            with seen.lock:
                seen.active -= 1
            with contextlib.suppress(OSError):  # the client gave up (the timeout test)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        def log_message(self, *_: object) -> None:
            """Quiet: requests are counted in `seen`, not logged."""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def tls_pair(*names: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context with a certificate for `names`, client context trusting its throwaway CA)."""
    ca = trustme.CA()
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(server_side)
    client_side = ssl.create_default_context()
    ca.configure_trust(client_side)
    return server_side, client_side


class LoopbackResolver:
    """Every name resolves to 127.0.0.1; counts the lookups (one per new connection)."""

    def __init__(self) -> None:
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        self.lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    async def resolve(self, host: str, _port: int) -> list[IPAddress]:
        self.lookups.append(host)
        return [ipaddress.ip_address("127.0.0.1")]


def get(transport: httpx2.BaseTransport, url: str, timeout_s: float = 10.0) -> httpx2.Response:
    """One GET straight through a transport, body read."""
    request = httpx2.Request("GET", url, extensions={"timeout": httpx2.Timeout(timeout_s).as_dict()})
    response = transport.handle_request(request)
    response.read()
    response.close()
    return response


def test_tls_verifies_the_url_host_though_the_socket_goes_to_the_checked_address() -> None:
    server_side, client_side = tls_pair(HOST)
    resolver = LoopbackResolver()
    with server(server_side) as (port, _), \
            PoolTransport(GuardedBackend(True, resolver), LIMITS, client_side) as transport:
        assert get(transport, f"https://{HOST}:{port}/").status_code == 200
        with pytest.raises(httpx2.ConnectError, match="Hostname mismatch"):
            get(transport, f"https://{OTHER}:{port}/")
        with PoolTransport(GuardedBackend(True, resolver), LIMITS) as default_trust, \
                pytest.raises(httpx2.ConnectError, match="certificate verify failed"):
            get(default_trust, f"https://{HOST}:{port}/")  # the default context verifies too

    async def scenario() -> None:
        transport = AsyncPoolTransport(GuardedAsyncBackend(True, resolver.resolve), LIMITS, client_side)
        async with httpx2.AsyncClient(transport=transport, timeout=10) as client:
            assert (await client.get(f"https://{HOST}:{port}/")).status_code == 200
            with pytest.raises(httpx2.ConnectError, match="Hostname mismatch"):
                await client.get(f"https://{OTHER}:{port}/")

    with server(server_side) as (port, _):
        asyncio.run(scenario())


def test_a_connection_is_kept_alive_for_its_host_and_never_lent_to_another() -> None:
    # Both names resolve to the same address and the certificate covers both: a pool keyed by
    # address would reuse HOST's TLS connection for OTHER. It is keyed by the URL's host.
    server_side, client_side = tls_pair(HOST, OTHER)
    resolver = LoopbackResolver()
    with server(server_side) as (port, seen), \
            PoolTransport(GuardedBackend(True, resolver), LIMITS, client_side) as transport:
        for host in (HOST, HOST, HOST, OTHER, OTHER):
            assert get(transport, f"https://{host}:{port}/").status_code == 200
    assert seen.connections == 2 and resolver.lookups == [HOST, OTHER]
    assert seen.hosts == [f"{host}:{port}" for host in (HOST, HOST, HOST, OTHER, OTHER)]

    async def scenario(port: int) -> None:
        async with guarded_async_client(True, 10, resolve=resolver.resolve) as client:
            for host in (HOST, HOST, OTHER, OTHER):
                assert (await client.get(f"http://{host}:{port}/")).status_code == 200

    resolver.lookups.clear()
    with server() as (port, seen):
        asyncio.run(scenario(port))
    assert seen.connections == 2 and resolver.lookups == [HOST, OTHER]


def test_the_connection_limit_holds_under_concurrent_requests() -> None:
    resolver = LoopbackResolver()

    async def scenario(port: int) -> None:
        async with guarded_async_client(True, 30, max_connections=2, resolve=resolver.resolve) as client:
            answers = await asyncio.gather(*(client.get(f"http://{HOST}:{port}/{n}") for n in range(6)))
        assert [answer.status_code for answer in answers] == [200] * 6

    with server(delay_s=0.2) as (port, seen):
        asyncio.run(scenario(port))
    assert seen.connections == 2 and seen.most_active == 2


def test_a_read_timeout_is_httpx2s_read_timeout_with_httpcore2s_as_the_cause() -> None:
    with (server(delay_s=2.0) as (port, _),
          PoolTransport(GuardedBackend(True, LoopbackResolver()), LIMITS) as transport,
          pytest.raises(httpx2.ReadTimeout) as caught):
        get(transport, f"http://{HOST}:{port}/", timeout_s=0.2)
    assert isinstance(caught.value.__cause__, httpcore2.ReadTimeout)


def test_every_httpcore2_error_maps_to_the_httpx2_error_of_the_same_name() -> None:
    exported = [getattr(httpcore2, name) for name in httpcore2.__all__]
    errors = {kind for kind in exported if isinstance(kind, type) and issubclass(kind, Exception)}
    # Raised between a connection and its pool only, which retries on another connection.
    errors.discard(httpcore2.ConnectionNotAvailable)
    assert set(ERRORS) == errors
    assert all(target.__name__ == source.__name__ and target.__module__ == "httpx2"
               for source, target in ERRORS.items())
