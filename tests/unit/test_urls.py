"""The SSRF guard: URL syntax, address verdicts, and checks after (fake) DNS resolution."""

from __future__ import annotations

import asyncio
import ipaddress

import httpx2
import pytest

from lotlens_common.urls import (
    BlockedDestination,
    IPAddress,
    address_refusal,
    check_destination,
    guarded_async_client,
    http_url_problem,
    invalid_http_urls,
    is_http_url,
    resolve_host,
)
from lotlens_gateway.errors import ApiError
from lotlens_gateway.webhook_hosts import refuse_private_webhooks
from tests.network_guard import stub_resolver

ACCEPTED = [
    "https://example.com/car.jpg", "http://img.example.com:8080/a/b.png?x=1&y=%20#frag", "HTTPS://EXAMPLE.COM",
    "http://127.0.0.1:9000/x.png", "https://[2001:db8::1]/x.png", "https://bücher.example/a.jpg",
    "https://s3.eu-west-1.amazonaws.com/bucket/key?X-Amz-Signature=abc", "https://a_b.example.com/x",
]


@pytest.mark.parametrize("url", ACCEPTED)
def test_absolute_http_urls_are_accepted(url: str) -> None:
    assert http_url_problem(url) is None and is_http_url(url)


@pytest.mark.parametrize(("url", "problem"), [
    ("ftp://example.com/car.jpg", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("javascript:alert(1)", "only http and https"),
    ("//example.com/a.jpg", "only http and https"),
    ("/relative.jpg", "only http and https"),
    ("https://", "no host"),
    ("http:///a.jpg", "no host"),
    ("https://exa mple.com/a.jpg", "whitespace"),
    ("https://example.com/a.jpg\n", "whitespace"),
    ("https://example.com:0/a.jpg", "port"),
    ("https://example.com:70000/a.jpg", "port"),
    ("https://example.com:abc/a.jpg", "malformed"),
    ("https://[::1/a.jpg", "malformed"),
    ("", "empty"),
    ("https://example.com/" + "a" * 9000, "longer"),
    ("https://img..example.com/a.jpg", "not a valid host name"),
    ("https://.example.com/a.jpg", "not a valid host name"),
    ("https://" + "a" * 64 + ".example.com/a.jpg", "not a valid host name"),
    # Hosts read as IPv4 that no client can connect to: the fast path let them through, and the
    # parser's InvalidURL then crashed the check (a 500; in a batch, a shard stuck for good).
    ("http://0177.0.0.1/hook", "malformed"),
    ("http://256.1.1.1/x.png", "malformed"),
    ("http://1.2.3.04/x.png", "malformed"),
    ("http://01.1.1.1:8080/x.png", "malformed"),
])
def test_other_values_are_refused_with_a_reason(url: str, problem: str) -> None:
    reason = http_url_problem(url)
    assert reason is not None and problem in reason


def test_many_urls_are_sorted_out_exactly_as_one_by_one() -> None:
    tricky = ["http://example.com:65535/a", "http://example.com:65536/a", "http://example.com:00080/a",
              "http://example.com:/a", "http://user@example.com/a", "http://-bad-.example.com/a",
              "http://example.com.", "http://example.com\n", "http://example.com/a b", "http://a..b/x",
              "https://example.com?q", "https://example.com#f", "http://" + "a" * 64 + ".com/x",
              "https://example.com/" + "a" * 9000, "https://", "ftp://example.com/x",
              "http://0177.0.0.1/x", "http://256.1.1.1/x", "http://1.2.3.4/x", "http://1.2.3.04/x"]
    urls = ACCEPTED + tricky + ACCEPTED + tricky  # repeated: each listed once, in first-seen order
    assert invalid_http_urls(urls) == [url for url in dict.fromkeys(urls) if not is_http_url(url)]


def test_many_urls_on_one_address_parse_the_address_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A submission's 250,000 image URLs on a host written as an IPv4 address were each fully
    # parsed: 7 of the gateway's 9 s for a 50,000-lot job.
    parsed: list[str] = []
    real_url = httpx2.URL

    def counting_url(url: str) -> httpx2.URL:
        parsed.append(url)
        return real_url(url)

    monkeypatch.setattr("lotlens_common.urls.httpx2.URL", counting_url)
    urls = [f"http://203.0.113.7:8080/lot-{n}/image.jpg" for n in range(1000)]
    bad = ["http://0177.0.0.1/lot-1.jpg", "http://0177.0.0.1/lot-2.jpg"]  # each one listed
    assert invalid_http_urls(urls + bad) == bad
    assert len(parsed) <= 2 + len(bad), parsed[:5]  # each address once, then each refused URL


@pytest.mark.parametrize("url", ["http://0177.0.0.1/x.png", "http://256.1.1.1/x.png"])
def test_a_host_no_client_can_parse_is_a_refused_destination_not_a_crash(url: str) -> None:
    with pytest.raises(BlockedDestination, match="malformed"):
        asyncio.run(check_destination(url, allow_loopback=False))


def test_non_strings_are_not_urls() -> None:
    assert http_url_problem(None) == "not a string" and not is_http_url(42)


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("100.64.0.1", "private"),
    ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"), ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"), ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("240.0.0.1", "reserved"), ("fc00::1", "private"),
    ("::ffff:10.0.0.1", "private"), ("::ffff:127.0.0.1", "loopback"),
    ("64:ff9b::a9fe:a9fe", "cloud metadata"),
    ("2002:c0a8:0101::1", "private"), ("192.0.2.1", "private"),
    # Not globally reachable by the IANA registries, yet global to Python before 3.11.10 (CVE-2024-4032).
    ("192.0.0.100", "private"), ("192.0.0.9", "private"), ("fec0::1", "private"), ("3fff::1", "private"),
])
def test_internal_addresses_are_refused(address: str, reason: str) -> None:
    assert address_refusal(ipaddress.ip_address(address), allow_loopback=False) == reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address), allow_loopback=False) is None


def test_the_loopback_switch_opens_loopback_only() -> None:
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), allow_loopback=True) is None
    assert address_refusal(ipaddress.ip_address("::1"), allow_loopback=True) is None
    assert address_refusal(ipaddress.ip_address("10.0.0.1"), allow_loopback=True) == "private"
    assert address_refusal(ipaddress.ip_address("169.254.169.254"), allow_loopback=True) == "cloud metadata"


def resolver(answers: dict[str, list[str]]):
    async def resolve(host: str, _port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in answers[host]]
    return resolve


def test_a_host_is_refused_when_any_of_its_addresses_is_internal() -> None:
    resolve = resolver({"mixed.example": ["93.184.216.34", "10.0.0.5"], "good.example": ["93.184.216.34"],
                        "meta.example": ["169.254.169.254"], "empty.example": []})
    asyncio.run(check_destination("https://good.example/a.jpg", False, resolve))
    for host in ("mixed.example", "meta.example", "empty.example"):
        with pytest.raises(BlockedDestination):
            asyncio.run(check_destination(f"https://{host}/a.jpg", False, resolve))
    with pytest.raises(BlockedDestination):
        asyncio.run(check_destination("ftp://good.example/a.jpg", False, resolve))
    with pytest.raises(BlockedDestination):
        asyncio.run(check_destination("http://[::1]:8080/", False, resolve))


def test_the_guarded_client_refuses_to_connect_to_what_dns_now_says_is_internal() -> None:
    # The rebinding case: whatever was checked before, the connection itself re-resolves and re-checks.
    async def scenario() -> None:
        rebinding = resolver({"rebind.example": ["10.0.0.7"]})
        async with guarded_async_client(False, 5, resolve=rebinding) as client:
            with pytest.raises(httpx2.ConnectError, match=r"rebind\.example does not resolve to a public"):
                await client.get("http://rebind.example/a.jpg")

    asyncio.run(scenario())


def test_a_host_the_resolver_cannot_be_asked_for_is_a_refused_connection_not_a_crash() -> None:
    # Accepted before intake checked host names, such a URL may still be queued. The IDNA codec
    # refuses it before any query is sent, so the real resolver runs here without the network.
    async def scenario() -> None:
        with pytest.raises(BlockedDestination, match="does not resolve to a public address"):
            await resolve_host("img..example.com", 443)
        async with guarded_async_client(False, 5) as client:
            with pytest.raises(httpx2.ConnectError, match="does not resolve to a public address"):
                await client.get("https://" + "a" * 64 + ".example.com/a.jpg")

    asyncio.run(scenario())


def test_the_guarded_client_reaches_a_host_at_its_next_address_when_the_first_refuses() -> None:
    # Only the first address was tried: an image host with one dead A record (or an AAAA record
    # this network cannot route) was "unreachable", and the lot was described without its images.
    async def scenario() -> int:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        two = resolver({"img.example": ["127.0.0.2", "127.0.0.1"]})
        async with server, guarded_async_client(True, 5, resolve=two) as client:
            return (await client.get(f"http://img.example:{port}/a.jpg")).status_code

    assert asyncio.run(scenario()) == 200


def test_a_unicode_host_is_looked_up_by_the_name_a_client_connects_to() -> None:
    # Python's IDNA codec (IDNA 2003) maps straße.de to strasse.de, another domain; clients
    # connect to xn--strae-oqa.de (IDNA 2008). The verdict was about a host nobody connects to.
    private = stub_resolver({"xn--strae-oqa.de": "10.0.0.1", "strasse.de": "93.184.216.34"})
    with pytest.raises(BlockedDestination, match=r"xn--strae-oqa\.de does not resolve to a public address"):
        asyncio.run(check_destination("https://straße.de/car.jpg", False, private))
    with pytest.raises(ApiError) as refused:
        asyncio.run(refuse_private_webhooks(["https://straße.de/hook"], private, False, 2.0, 100))
    assert refused.value.code == "INVALID_WEBHOOK_URLS"
