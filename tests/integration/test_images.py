"""Image URL checks against a real local HTTP server: status, type, size, redirects, SSRF."""

from __future__ import annotations

import asyncio
import contextlib
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx2
import pytest

from lotlens_common.images import GifFrames, ImageCheck, check_images, gif_frames
from lotlens_common.urls import guarded_async_client
from lotlens_vision_batcher.config import VisionBatcherSettings
from lotlens_vision_batcher.vision_stage import image_checker
from tests.network_guard import stub_resolver
from tests.servers import png, serve

pytestmark = pytest.mark.integration

IMAGE = png()
MB = 1024 * 1024


def gif(frames: int) -> bytes:
    """A 1 x 1 GIF89a with this many frames (each with its graphic control extension)."""
    frame = (b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # graphic control: 10 cs delay
             b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00"  # image descriptor, no local table
             b"\x02\x02\x44\x01\x00")  # LZW minimum code size, one data sub-block, terminator
    return b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff" + frame * frames + b"\x3b"


def big_still_gif() -> bytes:
    """A one-image GIF of about 9 MB: its LZW data in 255-byte sub-blocks."""
    still = gif(1)
    data = b"\xff" + b"\0" * 255
    return still[:-3] + data * (9 * MB // len(data)) + still[-3:]


# path -> (content type, body) for the image types OpenAI does and does not accept.
TYPED = {"/still.gif": ("image/gif", gif(1)), "/animated.gif": ("image/gif", gif(3)),
         "/photo.webp": ("image/webp", b"RIFF....WEBPVP8 "), "/scan.bmp": ("image/bmp", b"BM...."),
         "/photo.jpg": ("image/jpg", b"\xff\xd8\xff"),
         "/animated-labelled.jpg": ("image/jpeg", gif(3)), "/still-labelled.jpg": ("image/jpeg", gif(1))}
BIG_STILL_GIF = big_still_gif()


BUSY_SEEN: dict[str, int] = {}


class Images(BaseHTTPRequestHandler):
    """Paths name their behaviour; see each branch."""

    def _headers(self, status: int, content_type: str, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _answer(self, body: bool) -> None:
        path = self.path
        if path.startswith("/redirect/"):
            hops = int(path.split("/")[2])
            self._redirect(f"/redirect/{hops - 1}" if hops > 1 else "/ok.png")
        elif path == "/to-metadata":
            self._redirect("http://169.254.169.254/latest/meta-data/")
        elif path == "/to-private":
            self._redirect("http://10.0.0.1/car.png")
        elif path in TYPED or path == "/big-still.gif":
            content_type, data = TYPED.get(path, ("image/gif", BIG_STILL_GIF))
            self._headers(200, content_type, len(data))
            if body:
                self.wfile.write(data)
        elif path == "/ok.png" or path.startswith("/ok"):
            self._headers(200, "image/png", len(IMAGE))
            if body:
                self.wfile.write(IMAGE)
        elif path == "/nohead.png" and not body:
            self._headers(405, "text/plain", 0)
        elif path == "/nohead.png":
            self._headers(200, "image/jpeg", len(IMAGE))
            self.wfile.write(IMAGE)
        elif path == "/nolength.png":
            self._headers(200, "image/png", None)
            if body:
                self.wfile.write(IMAGE)
        elif path == "/huge-declared.png":
            self._headers(200, "image/png", 11 * MB)
        elif path == "/huge-streamed.png":
            self._headers(200, "image/png", None)
            if body:
                for _ in range(11):
                    self.wfile.write(b"\0" * MB)
        elif path == "/page.html":
            self._headers(200, "text/html; charset=utf-8", 5)
            if body:
                self.wfile.write(b"<p/>\n")
        elif path.startswith("/busy-"):
            # /busy-<n>-<tag>.png: 503 to its first n requests, then the image.
            BUSY_SEEN[path] = BUSY_SEEN.get(path, 0) + 1
            if BUSY_SEEN[path] <= int(path.split("-")[1]):
                self._headers(503, "text/plain", 0)
            else:
                self._headers(200, "image/png", len(IMAGE))
                if body:
                    self.wfile.write(IMAGE)
        elif path == "/slow.png":
            time.sleep(8)
            self._headers(200, "image/png", len(IMAGE))
        else:
            self._headers(404, "text/plain", 0)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        # The checker stops reading past the size limit.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._answer(body=True)

    def log_message(self, *_args: object) -> None:
        """Quiet: the tests check answers, not the server's log."""


@pytest.fixture(scope="module")
def host() -> Iterator[str]:
    with serve(Images) as url:
        yield url


@pytest.fixture(params=["plain", "guarded"])
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# No name resolves here: the images are on 127.0.0.1.
NO_NAMES = stub_resolver({})


def check(urls: list[str], kind: str = "plain", allow_loopback: bool = True, **options: Any) -> ImageCheck:
    async def run() -> ImageCheck:
        client = (guarded_async_client(allow_loopback, 10, resolve=NO_NAMES) if kind == "guarded"
                  else httpx2.AsyncClient(timeout=10, follow_redirects=False))
        async with client:
            return await check_images(urls, client, allow_loopback, 4,
                                      resolve=NO_NAMES, **options)

    return asyncio.run(run())


def test_reachable_images_are_valid_and_the_rest_unreachable_in_the_given_order(
        host: str, client_kind: str) -> None:
    urls = [f"{host}/ok.png", f"{host}/missing.png", f"{host}/nohead.png", f"{host}/nolength.png",
            f"{host}/page.html", f"{host}/ok.png", f"{host}/ok-2.png"]
    result = check(urls, client_kind)
    assert result.valid == (f"{host}/ok.png", f"{host}/nohead.png", f"{host}/nolength.png",
                            f"{host}/ok-2.png")
    assert result.unreachable == (f"{host}/missing.png", f"{host}/page.html")
    assert result.reasons[f"{host}/missing.png"] == "HTTP 404"
    assert "not an image" in result.reasons[f"{host}/page.html"]


def test_each_usable_image_comes_with_its_bytes_declared_or_read(host: str) -> None:
    """The per-request cap of image bytes is applied from these sizes."""
    result = check([f"{host}/ok.png", f"{host}/nolength.png", f"{host}/still.gif", f"{host}/missing.png"])
    assert result.sizes == {f"{host}/ok.png": len(IMAGE), f"{host}/nolength.png": len(IMAGE),
                            f"{host}/still.gif": len(gif(1))}


def test_only_png_jpeg_webp_and_non_animated_gif_are_usable(host: str) -> None:
    result = check([f"{host}{path}" for path in TYPED])
    assert result.valid == (f"{host}/still.gif", f"{host}/photo.webp", f"{host}/photo.jpg",
                            f"{host}/still-labelled.jpg")
    assert result.reasons[f"{host}/animated.gif"] == "an animated GIF"
    # Served as image/jpeg, it is still a GIF by its bytes, which is what OpenAI reads.
    assert result.reasons[f"{host}/animated-labelled.jpg"] == "an animated GIF"
    assert "not a PNG, JPEG, WEBP or GIF" in result.reasons[f"{host}/scan.bmp"]


def test_gif_frames_are_counted_by_walking_the_blocks() -> None:
    assert [gif_frames(gif(n)) for n in (1, 2, 5)] == [1, 2, 5]
    assert gif_frames(b"\x89PNG....") == 0
    assert gif_frames(BIG_STILL_GIF) == 1
    for frames in (1, 2, 5):  # the same count when the bytes come one at a time
        walk = GifFrames()
        for byte in gif(frames):
            walk.feed(bytes([byte]))
        assert walk.frames == frames


def test_a_big_gif_is_checked_without_holding_its_bytes(host: str) -> None:
    tracemalloc.start()
    try:
        result = check([f"{host}/big-still.gif"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.valid == (f"{host}/big-still.gif",)
    assert result.sizes == {f"{host}/big-still.gif": len(BIG_STILL_GIF)}
    assert peak < 2 * MB, f"{peak / MB:.1f} MB held for a {len(BIG_STILL_GIF) / MB:.1f} MB GIF"


def test_images_over_10_mb_are_unreachable_whether_declared_or_streamed(host: str) -> None:
    result = check([f"{host}/huge-declared.png", f"{host}/huge-streamed.png"])
    assert result.valid == ()
    assert all("larger than" in reason for reason in result.reasons.values())


def test_the_vision_batcher_checks_with_its_configured_size_limit(
        host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOTLENS_ALLOW_LOOPBACK_URLS", "true")
    monkeypatch.setenv("LOTLENS_MAX_IMAGE_BYTES", str(len(IMAGE) - 1))
    checker = image_checker(VisionBatcherSettings())

    async def run() -> ImageCheck:
        return await checker([f"{host}/ok.png"])

    result = asyncio.run(run())
    assert result.reasons == {f"{host}/ok.png": f"larger than {len(IMAGE) - 1} bytes ({len(IMAGE)})"}


def test_up_to_three_redirects_are_followed(host: str, client_kind: str) -> None:
    result = check([f"{host}/redirect/3", f"{host}/redirect/4"], client_kind)
    assert result.valid == (f"{host}/redirect/3",)
    assert result.reasons[f"{host}/redirect/4"] == "more than 3 redirects"


def test_redirects_to_internal_addresses_are_refused_without_connecting(host: str, client_kind: str) -> None:
    result = check([f"{host}/to-metadata", f"{host}/to-private"], client_kind)
    assert result.valid == ()
    assert "cloud metadata" in result.reasons[f"{host}/to-metadata"]
    assert "private" in result.reasons[f"{host}/to-private"]


def test_loopback_is_refused_unless_allowed(host: str, client_kind: str) -> None:
    result = check([f"{host}/ok.png"], client_kind, allow_loopback=False)
    assert result.valid == () and "loopback" in result.reasons[f"{host}/ok.png"]


def test_a_busy_image_host_is_asked_again_before_the_image_counts_as_unreachable(host: str) -> None:
    # Found by `make chaos`: a host answering 503 (or dropping connections) under load failed lots
    # for good. HEAD and the GET that follows it both get 503 on the first try.
    result = check([f"{host}/busy-2-a.png", f"{host}/busy-99-b.png", f"{host}/missing-c.png"])
    assert result.valid == (f"{host}/busy-2-a.png",)
    assert result.reasons[f"{host}/busy-99-b.png"] == "HTTP 503"
    assert BUSY_SEEN["/busy-99-b.png"] == 2 * 3  # HEAD and GET, three tries
    assert result.reasons[f"{host}/missing-c.png"] == "HTTP 404"  # not asked again


def test_a_slow_image_is_unreachable_after_the_timeout(host: str) -> None:
    started = time.monotonic()
    result = check([f"{host}/slow.png", f"{host}/ok.png"], timeout_s=1.0)
    assert result.valid == (f"{host}/ok.png",)
    assert "no answer within" in result.reasons[f"{host}/slow.png"]
    # Well under the image's 8 s (a busy 2-core machine adds seconds to a 1 s timeout, not 5).
    assert time.monotonic() - started < 6


def test_malformed_and_unresolvable_urls_are_unreachable(client_kind: str) -> None:
    urls = ["ftp://example.com/a.png", "https://no-such-host.invalid/a.png", "https://img..example.com/a.png"]
    result = check(urls, client_kind)
    assert result.valid == () and result.unreachable == tuple(urls)
    assert "no-such-host.invalid does not resolve to a public address" in result.reasons[urls[1]]
    assert "not a valid host name" in result.reasons[urls[2]]
