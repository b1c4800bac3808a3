"""SSRF guard for webhook URLs: only public addresses, checked when the connection is opened.

The synchronous twin of `lotlens_common.urls.GuardedAsyncBackend` (the same verdict,
`urls.reachable`, and the same error, `BlockedDestination`): webhook attempts run on threads.
The check sits in the network backend, after DNS resolution, and the socket connects to the very
address that was checked, so a DNS answer that changes between check and connect (rebinding)
cannot slip through. Redirects are never followed, so there is nothing to re-check. TLS still
verifies the certificate against the host name in the URL. Proxies from the environment are
ignored: a proxy would connect on our behalf, unchecked.

An attempt's timeout bounds it whole (`attempt_deadline`): httpx2's timeouts bound each read and
write, so an endpoint sending its answer a byte at a time held an attempt thread for as long as
it liked. Each read and write of a connection gets what is left of its thread's attempt, and so
does the DNS lookup: the system resolver retries each name server for seconds, and a customer's
slow DNS held the attempt thread that long.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any

import httpcore2
import httpx2

from lotlens_common.pool_transport import PoolTransport
from lotlens_common.urls import BlockedDestination, IPAddress, addresses_found, not_public, reachable

Resolver = Callable[..., list[tuple[Any, ...]]]

_attempt = threading.local()  # `.ends`: the monotonic time this thread's attempt must be over by


@contextmanager
def attempt_deadline(seconds: float) -> Iterator[None]:
    """Bound every read and write this thread's connections make to `seconds` from now, in all.

    Nested, it can only shorten the time left (the outer deadline comes back on exit)."""
    outer: float | None = getattr(_attempt, "ends", None)
    ends = time.monotonic() + seconds
    _attempt.ends = ends if outer is None else min(outer, ends)
    try:
        yield
    finally:
        _attempt.ends = outer


def _left(timeout: float | None, timed_out: type[httpcore2.TimeoutException]) -> float | None:
    ends: float | None = getattr(_attempt, "ends", None)
    if ends is None:
        return timeout
    left = ends - time.monotonic()
    if left <= 0:
        raise timed_out("the attempt's time is up")
    return left if timeout is None else min(timeout, left)


def _resolve_within(resolve: Resolver, host: str, port: int, timeout: float | None) -> list[tuple[Any, ...]]:
    """`resolve` on a thread of its own, waited for at most `timeout`: `getaddrinfo` cannot be
    interrupted, so a lookup that outlives its attempt finishes on that thread, unwaited for."""
    answer: Future[list[tuple[Any, ...]]] = Future()

    def lookup() -> None:
        try:
            answer.set_result(resolve(host, port, type=socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the waiting attempt as it is
            answer.set_exception(exc)

    threading.Thread(target=lookup, name=f"dns-{host}"[:64], daemon=True).start()
    try:
        return answer.result(timeout)
    except FutureTimeout:
        raise httpcore2.ConnectTimeout(f"no DNS answer for {host} within the attempt's time") from None


class _DeadlineStream(httpcore2.NetworkStream):
    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore2.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                     _left(timeout, httpcore2.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


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
            infos = _resolve_within(self._resolve, host, port, _left(timeout, httpcore2.ConnectTimeout))
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name the IDNA codec cannot encode
            raise not_public(host) from exc
        *others, last = reachable(host, addresses_found(infos), self._allow_loopback)
        # Each checked address in turn, within the attempt's time: a host with one dead address
        # (or one this network cannot route) is reached at the next, as `create_connection` does.
        for address in others:
            with contextlib.suppress(httpcore2.ConnectError, httpcore2.ConnectTimeout):
                return self._connect(address, port, timeout, local_address, socket_options)
        return self._connect(last, port, timeout, local_address, socket_options)

    def _connect(self, address: IPAddress, port: int, timeout: float | None, local_address: str | None,
                 socket_options: Iterable[Any] | None) -> httpcore2.NetworkStream:
        return _DeadlineStream(self._inner.connect_tcp(str(address), port,
                                                       _left(timeout, httpcore2.ConnectTimeout),
                                                       local_address, socket_options))

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
