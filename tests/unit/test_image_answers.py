"""Image checks against answers a real host may give, through an in-memory transport (nothing
connects; the host name resolves to loopback by a stub)."""

from __future__ import annotations

import asyncio
import gc
import gzip
import ipaddress
import socket
from collections.abc import Callable

import httpx2
import pytest

from lotlens_common import images
from lotlens_common.images import ImageCheck, check_images
from lotlens_common.urls import IPAddress

GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
       b"\x21\xf9\x04\x00\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b")


async def _loopback(_host: str, _port: int) -> list[IPAddress]:
    return [ipaddress.ip_address("127.0.0.1")]


def _checked(urls: list[str], answer: Callable[[httpx2.Request], httpx2.Response]) -> ImageCheck:
    async def run() -> ImageCheck:
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(answer)) as client:
            return await check_images(urls, client, allow_loopback=True, resolve=_loopback, timeout_s=5)

    return asyncio.run(run())


def test_a_redirect_to_a_malformed_location_is_that_image_unusable_not_a_crash() -> None:
    # `join` raised InvalidURL, which is no HTTPError: it left the whole check, so one image host
    # kept a batch shard from being sent, round after round, and the gateway answered 500.
    def answer(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/moved.jpg":
            return httpx2.Response(302, headers={"Location": "http://[::1"})
        return httpx2.Response(200, headers={"Content-Type": "image/gif"}, stream=httpx2.ByteStream(GIF))

    check = _checked(["http://img.example/moved.jpg", "http://img.example/ok.gif"], answer)
    assert check.valid == ("http://img.example/ok.gif",)
    assert "Location" in check.reasons["http://img.example/moved.jpg"]


def test_a_gif_is_asked_for_and_read_uncompressed() -> None:
    # httpx2 asks for gzip by default and the GIF was read as it came (compressed): a host that
    # compresses was "not a readable GIF", where OpenAI fetches and reads it.
    def answer(request: httpx2.Request) -> httpx2.Response:
        if "gzip" in request.headers.get("accept-encoding", ""):
            return httpx2.Response(200, headers={"Content-Type": "image/gif", "Content-Encoding": "gzip"},
                                   stream=httpx2.ByteStream(gzip.compress(GIF)))
        return httpx2.Response(200, headers={"Content-Type": "image/gif"}, stream=httpx2.ByteStream(GIF))

    assert _checked(["http://img.example/one-frame.gif"], answer).valid == ("http://img.example/one-frame.gif",)


def _typed(body: bytes, content_type: str = "image/png") -> Callable[[httpx2.Request], httpx2.Response]:
    def answer(request: httpx2.Request) -> httpx2.Response:
        # A host honouring Range, as most do: the first bytes the checker asks for.
        wanted = body[:16] if request.headers.get("range") == "bytes=0-15" and body else body
        status = 206 if wanted is not body else 200
        headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        return httpx2.Response(status, headers=headers,
                               stream=httpx2.ByteStream(b"" if request.method == "HEAD" else wanted))
    return answer


def test_a_body_that_is_no_image_by_its_bytes_is_a_missing_image_whatever_its_type_says() -> None:
    # OpenAI reads the format from the bytes: an HTML page or an empty body sent as image/png
    # passed the check, and OpenAI refused the whole request, failing the lot with its good images.
    html = b"<!doctype html><html><body>Not found</body></html>"
    for body, shown in ((html, "starts b'<!doctyp'"), (b"", "is empty")):
        url = "http://img.example/car.png"
        check = _checked([url], _typed(body))
        assert check.valid == () and shown in check.reasons[url], check.reasons


def test_each_format_openai_reads_passes_by_its_first_bytes() -> None:
    bodies = {"png": b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "jpeg": b"\xff\xd8\xff\xe0" + b"\0" * 40,
              "webp": b"RIFF\x24\0\0\0WEBPVP8 " + b"\0" * 40}
    for name, body in bodies.items():
        url = f"http://img.example/car.{name}"
        assert _checked([url], _typed(body, f"image/{name}")).valid == (url,), name


def test_a_dns_answer_of_try_again_is_asked_again_not_a_missing_image(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # EAI_AGAIN ("temporary failure in name resolution": a resolver timing out) was final: the
    # image was refused, that verdict kept for the whole check (and 60 s in the batcher), and a
    # lot whose images were all on that host failed with "none of its images could be fetched".
    asked: list[str] = []

    def resolver(host: str, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        asked.append(host)
        if len(asked) == 1:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    monkeypatch.setattr(images, "RETRY_PAUSES_S", (0.01, 0.01))

    async def run() -> ImageCheck:
        transport = httpx2.MockTransport(_typed(b"\x89PNG\r\n\x1a\n" + b"\0" * 40))
        async with httpx2.AsyncClient(transport=transport) as client:
            return await check_images(["http://img.example/car.png"], client, allow_loopback=True,
                                      timeout_s=5)

    check = asyncio.run(run())
    assert check.valid == ("http://img.example/car.png",), check.reasons
    assert asked == ["img.example", "img.example"]


def test_a_lookup_failing_after_its_image_timed_out_leaves_no_unretrieved_error(
        caplog: pytest.LogCaptureFixture) -> None:
    # The lookup is shared by the host's images and shielded from their timeouts: one that failed
    # after they had all given up was never awaited, and asyncio logged "Task exception was never
    # retrieved" at ERROR for every slow, failing image host.
    async def slow_failure(_host: str, _port: int) -> list[IPAddress]:
        await asyncio.sleep(0.2)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def run() -> ImageCheck:
        never_asked = httpx2.MockTransport(lambda _: httpx2.Response(200))
        async with httpx2.AsyncClient(transport=never_asked) as client:
            checked = await check_images(["https://slow.example/a.jpg"], client, allow_loopback=False,
                                         resolve=slow_failure, timeout_s=0.05)
            await asyncio.sleep(0.4)  # the lookup ends, failing, with no one waiting for it
            return checked

    checked = asyncio.run(run())
    gc.collect()
    assert checked.unreachable == ("https://slow.example/a.jpg",)
    assert "never retrieved" not in caplog.text
