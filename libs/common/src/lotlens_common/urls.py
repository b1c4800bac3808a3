"""Outbound URL safety (the SSRF guard) for every URL a customer hands us: images and webhooks.

Three layers, from cheap to thorough:

* `http_url_problem` / `is_http_url` — syntax only (http or https, a host a resolver can be
  asked for, a valid port, no whitespace, no credentials); what request validation uses, no
  network. `literal_refusal` also refuses a host written as a non-public IP address, still
  without the network.
* `check_destination` — resolves the host and refuses it unless every address is public:
  no private, loopback, link-local (cloud metadata 169.254.169.254 included), multicast,
  reserved or unspecified address. `allow_loopback` lets 127.0.0.0/8 and ::1 through (the local
  stack and the tests). Callers that follow redirects call it again for every hop.
* `guarded_async_client` — an httpx2 client whose network backend resolves and checks the host
  itself and connects to the very address it checked, so a DNS answer that changes between the
  check and the connection (rebinding) cannot reach an internal address. It follows no
  redirects and ignores proxy variables (a proxy would connect on our behalf, unchecked).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore2
import httpx2

from lotlens_common import lookups
from lotlens_common.pool_transport import AsyncPoolTransport

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> every address the host resolves to.
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

MAX_URL_LENGTH = 8192
SCHEMES = frozenset({"http", "https"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
# Not globally reachable by the IANA special-purpose registries, yet `is_global` before Python
# 3.11.10 (CVE-2024-4032): IETF protocol assignments, IPv6 site-local (deprecated, still routed
# inside some networks), IPv6 documentation.
_NOT_GLOBAL = tuple(ipaddress.ip_network(net) for net in ("192.0.0.0/24", "fec0::/10", "3fff::/20"))
_BAD_CHARACTER = re.compile(r"[\s\x00-\x1f\x7f]")
# The common case (an ASCII host name, an optional port, any path) decided without a full parse:
# validating 150,000 image URLs of a 50,000-lot request must take milliseconds, not seconds.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_URL = re.compile(
    rf"(?i:https?)://(?P<host>{_LABEL}(?:\.{_LABEL})*\.?)(?::(?P<port>[0-9]{{1,5}}))?(?:[/?#][^\s\x00-\x1f\x7f]*)?")
# The same rule in two steps for many URLs: the scheme and authority (few distinct ones per
# request, each checked once), then the rest for bad characters.
_AUTHORITY = re.compile(r"(?i:https?)://(?P<host>[^/?#:\s]*)(?::(?P<port>[0-9]{1,5}))?(?=[/?#]|\Z)")
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
# A host whose last label is a number is read as an IPv4 address (WHATWG URL, "ends in a number"):
# only the full parse tells a valid one (`1.2.3.4`) from one no client connects to (`0177.0.0.1`).
_NUMERIC_HOST = re.compile(r"(?:.*\.)?(?:[0-9]+|0[xX][0-9A-Fa-f]*)\.?")

class BlockedDestination(httpcore2.ConnectError):
    """The URL may not be fetched: bad scheme, unresolvable host or a non-public address.

    A `httpcore2.ConnectError`, so inside an httpx2 client it surfaces as `httpx2.ConnectError`.
    """


class LookupTryAgain(BlockedDestination):
    """The resolver said "try again" (EAI_AGAIN): no verdict on the host yet."""


def not_public(host: str) -> BlockedDestination:
    """The one refusal of a name that does not resolve, or resolves to an address the guard refuses.

    The reason reaches clients (test-image-validation, missing images, webhook deliveries): told
    apart, "cannot resolve X" and "X resolves to a private address" mapped which of the network's
    internal names exist.
    """
    return BlockedDestination(f"{host} does not resolve to a public address")


def http_url_problem(url: object) -> str | None:
    """Why a value is not an absolute http(s) URL we could fetch, or None when it is one."""
    if not isinstance(url, str):
        return "not a string"
    if not url or len(url) > MAX_URL_LENGTH:
        return f"empty or longer than {MAX_URL_LENGTH} characters"
    plain = _PLAIN_URL.fullmatch(url)
    if plain and not _NUMERIC_HOST.fullmatch(plain.group("host")):
        port = plain.group("port")
        return None if port is None or 0 < int(port) < 65536 else "port out of range"
    if _BAD_CHARACTER.search(url):
        return "contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        port_number = parts.port
        parsed = httpx2.URL(url)
    except (ValueError, httpx2.InvalidURL) as exc:
        return f"malformed: {exc}"
    if parts.scheme.lower() not in SCHEMES:
        return "only http and https URLs are allowed"
    if not parts.hostname or not parsed.host:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        # They would be stored, echoed in results and logged.
        return "credentials (user:password@) are not allowed in URLs"
    if port_number == 0:
        return "port 0 is not a valid port"
    return _host_problem(parsed.host)


def _host_problem(host: str) -> str | None:
    """Why no resolver could be asked for `host` (an empty label, one over 63 characters), or None."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:  # a name: what the system resolver is handed, checked here without asking it
        try:
            host.encode("idna")
        except UnicodeError as exc:
            return f"{host!r} is not a valid host name ({exc.__cause__ or exc})"
    return None


def is_http_url(url: object) -> bool:
    """True for an absolute, well-formed http(s) URL (syntax only, no network)."""
    return http_url_problem(url) is None


def invalid_http_urls(urls: Iterable[str]) -> list[str]:
    """The distinct `urls` that `is_http_url` refuses, in first-seen order (fast for 250,000 URLs)."""
    authorities: dict[str, bool] = {}
    invalid: dict[str, None] = {}
    for url in urls:
        plain = _AUTHORITY.match(url)
        if plain is not None and len(url) <= MAX_URL_LENGTH:
            authority = plain.group(0)
            ok = authorities.get(authority)
            if ok is None:
                ok = authorities[authority] = _authority_valid(plain)
            if ok and not _BAD_CHARACTER.search(url, plain.end()):
                continue
        # Anything the shortcut does not accept gets the full check.
        if url not in invalid and not is_http_url(url):
            invalid[url] = None
    return list(invalid)


def _authority_valid(plain: re.Match[str]) -> bool:
    """Whether a scheme and authority (`_AUTHORITY`) are good for any URL that starts with them."""
    host, port = plain.group("host"), plain.group("port")
    if _NUMERIC_HOST.fullmatch(host):
        # Only the full parse tells an address from a host no client reads (`_NUMERIC_HOST`); it is
        # asked once per authority, not once per URL (a job's images on one address: 250,000 parses).
        return is_http_url(plain.group(0) + "/")
    return _HOST.fullmatch(host) is not None and (port is None or 0 < int(port) < 65536)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, Teredo client), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def address_refusal(address: IPAddress, allow_loopback: bool) -> str | None:
    """Why an outbound connection to this address is refused, or None when it is allowed."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_refusal(embedded, allow_loopback)
    if address.is_loopback:
        return None if allow_loopback else "loopback"
    if address in _METADATA:
        return "cloud metadata"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if address.is_reserved:
        return "reserved"
    if address.is_private or not address.is_global or any(address in net for net in _NOT_GLOBAL):
        return "private"
    return None


def literal_refusal(url: str, allow_loopback: bool) -> str | None:
    """Why a syntactically valid URL's host, written as an IP address, may not be reached; else None."""
    try:
        address = ipaddress.ip_address(httpx2.URL(url).host.strip("[]"))
    except ValueError:
        return None  # a name: only resolving it tells
    return address_refusal(address, allow_loopback)


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, by the system resolver, within the current requester's
    share of the process's lookup threads (`lookups.py`; asyncio's default executor, shared by
    everyone, let one client's slow DNS starve every other client's lookups)."""
    try:
        infos = await lookups.shared().getaddrinfo(host, port)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:  # the resolver gave no answer in time: ask again later
            raise LookupTryAgain(f"cannot resolve {host} now: {exc}") from exc
        raise not_public(host) from exc
    except (OSError, UnicodeError) as exc:  # UnicodeError: a name the IDNA codec cannot encode
        raise not_public(host) from exc
    return addresses_found(infos)


def addresses_found(infos: Iterable[tuple[Any, ...]]) -> list[IPAddress]:
    """The addresses in `getaddrinfo` answers."""
    # Scoped IPv6 addresses come back as `fe80::1%eth0`; the scope does not change the verdict.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def reachable(host: str, addresses: list[IPAddress], allow_loopback: bool) -> list[IPAddress]:
    """`addresses` when every one of them may be reached; BlockedDestination otherwise."""
    if not addresses:
        raise not_public(host)
    for address in addresses:
        # One bad address is enough: the connection could land on it.
        reason = address_refusal(address, allow_loopback)
        if reason and _is_address(host):  # written in the URL: saying which kind tells nothing new
            raise BlockedDestination(f"{host} resolves to a {reason} address: refused")
        if reason:
            raise not_public(host)
    return addresses


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


async def checked_addresses(host: str, port: int, allow_loopback: bool,
                            resolve: Resolver = resolve_host) -> list[IPAddress]:
    """The host's addresses, when every one of them may be reached; BlockedDestination otherwise."""
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        try:
            addresses = await resolve(host, port)
        except LookupTryAgain:
            raise
        except (BlockedDestination, OSError, UnicodeError) as exc:  # whatever the resolver's words
            raise not_public(host) from exc
    return reachable(host, addresses, allow_loopback)


async def check_destination(url: str, allow_loopback: bool, resolve: Resolver = resolve_host) -> None:
    """Refuse (BlockedDestination) a URL that is not http(s) or whose host is not public."""
    problem = http_url_problem(url)
    if problem:
        raise BlockedDestination(f"{url!r}: {problem}")
    parsed = httpx2.URL(url)
    port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
    await checked_addresses(connect_host(parsed), port, allow_loopback, resolve)


def connect_host(url: httpx2.URL) -> str:
    """The host name a client looks up and connects to: a Unicode name in its IDNA 2008 (punycode)
    form, as httpx encodes it. Python's own codec (IDNA 2003) maps `straße.de` to `strasse.de`,
    another domain, so a verdict on `url.host` could be about a host nobody connects to."""
    return url.raw_host.decode("ascii")


class GuardedAsyncBackend(httpcore2.AsyncNetworkBackend):
    """Resolves the host itself, refuses non-public addresses, connects to a checked one."""

    def __init__(self, allow_loopback: bool, resolve: Resolver = resolve_host) -> None:
        self._allow_loopback = allow_loopback
        self._resolve = resolve
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore2.AsyncNetworkStream:
        """Open a TCP connection to a checked address of `host` (TLS still verifies `host`)."""
        *others, last = await checked_addresses(host, port, self._allow_loopback, self._resolve)
        # Each checked address in turn: a host with one dead address (or one this network cannot
        # route) is reached at the next, as `create_connection` does.
        for address in others:
            with contextlib.suppress(httpcore2.ConnectError, httpcore2.ConnectTimeout):
                return await self._inner.connect_tcp(str(address), port, timeout, local_address,
                                                     socket_options)
        return await self._inner.connect_tcp(str(last), port, timeout, local_address, socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore2.AsyncNetworkStream:
        """Unix sockets are local by definition: always refused."""
        raise BlockedDestination("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        """Delegate to the anyio backend."""
        await self._inner.sleep(seconds)


def guarded_async_client(allow_loopback: bool, timeout_s: float, max_connections: int = 100,
                         resolve: Resolver = resolve_host) -> httpx2.AsyncClient:
    """An async client that only reaches public addresses and never follows redirects by itself."""
    limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    transport = AsyncPoolTransport(GuardedAsyncBackend(allow_loopback, resolve), limits)
    return httpx2.AsyncClient(transport=transport, timeout=timeout_s, follow_redirects=False, trust_env=False)
