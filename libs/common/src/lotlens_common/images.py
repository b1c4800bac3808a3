"""Is an image URL usable? Reachable (2xx), a type OpenAI accepts (PNG, JPEG, WEBP, non-animated
GIF), at most 10 MB — and safe to fetch.

Each URL gets a HEAD request; a GET (streamed, read no further than the size limit) follows
when HEAD is refused or does not tell the type and size. OpenAI reads an image's format from its
bytes, not its Content-Type: an image must also start as a PNG, JPEG, WEBP or GIF does (after a
HEAD that says yes, a GET of its first 16 bytes), so an HTML page or an empty body sent as
`image/png` is a missing image, not a request OpenAI refuses (which fails the whole lot).
Redirects are followed by hand, at most `max_redirects`, and every hop goes through the SSRF
guard of `lotlens_common.urls` first.
A GIF is always fetched (GET), since only its frames tell whether it is animated; its blocks are
walked as they arrive, and reading stops at its second image. Unreachable
images are not an error for the caller: they become the lot's `missing_images`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from types import MappingProxyType

import httpx2

from lotlens_common.image_budget import current_window
from lotlens_common.image_hosts import HostHealth
from lotlens_common.lookups import requester
from lotlens_common.shares import Shares
from lotlens_common.stage.core.limits import IMAGE_TYPES
from lotlens_common.urls import (
    BlockedDestination,
    IPAddress,
    LookupTryAgain,
    Resolver,
    check_destination,
    resolve_host,
)

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_REDIRECTS = 3
# Statuses that say "not now" rather than "no such image"; with connection errors, tried again.
PASSING_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
RETRY_PAUSES_S = (0.5, 2.0)
# Identity: a GIF's blocks are walked as they come, and a compressed one read as a broken GIF
# (httpx2 asks for gzip by default); sizes are the image's own, as OpenAI counts them.
_ACCEPT = {"Accept": "image/*", "Accept-Encoding": "identity", "User-Agent": "LotLens-ImageCheck/1.0"}
_LEADING_BYTES = 16
_FIRST_BYTES = {**_ACCEPT, "Range": f"bytes=0-{_LEADING_BYTES - 1}"}


@dataclass(frozen=True)
class ImageCheck:
    """The URLs in the order given (duplicates once): the usable ones and the others, with why."""

    valid: tuple[str, ...]
    unreachable: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)
    # Bytes of each usable image (its Content-Length, or what a GET read): OpenAI caps the image
    # bytes of one request (`stage/core/limits.fit_request_images`).
    sizes: dict[str, int] = field(default_factory=dict)
    # Not checked: their turn came after the caller's `start_by` (no verdict either way).
    unchecked: tuple[str, ...] = ()


class _Unusable(Exception):
    """This image cannot be used; the message says why."""


class _NoDnsAnswer(LookupTryAgain):
    """The lookup ran into its own timeout: for `image_hosts`, a host that does not answer."""


@dataclass(frozen=True)
class _Answer:
    status: int
    content_type: str
    length: int | None
    frames: int | None = None  # GIFs fetched with GET only
    leading: bytes | None = None  # the body's first bytes, when a GET read them


@dataclass(frozen=True)
class _Try:
    why: str | None  # None: usable
    passing: bool  # trying again may change the verdict
    size: int


# Servers that say image/jpg mean image/jpeg.
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}


def _media_type(content_type: str) -> str:
    media = content_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(media, media)


def _is_image(content_type: str) -> bool:
    return _media_type(content_type).startswith("image/")


# Bytes each step of a GIF's walk reads before it can decide: the header (13), a block's first
# byte, the rest of an image descriptor (9), an extension's label, a sub-block's length.
_GIF_STEPS: Mapping[str, int] = MappingProxyType(
    {"header": 13, "block": 1, "descriptor": 9, "label": 1, "sub-blocks": 1})


class GifFrames:
    """Counts a GIF's images as its bytes arrive, walking its blocks: only a block header is ever
    held, so a 10 MB GIF is checked without keeping it. More than one image means animated."""

    def __init__(self) -> None:
        self.frames = 0
        self._state = "header"
        self._pending = bytearray()
        self._skip = 0  # bytes to pass over: colour tables, the LZW code size, sub-block data

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view and self._state != "end":  # the trailer, or bytes that are no GIF block
            if self._skip:
                passed = min(self._skip, len(view))
                self._skip -= passed
                view = view[passed:]
                continue
            taken = min(_GIF_STEPS[self._state] - len(self._pending), len(view))
            self._pending += view[:taken]
            view = view[taken:]
            if len(self._pending) == _GIF_STEPS[self._state]:
                self._step(bytes(self._pending))
                self._pending.clear()

    def _step(self, read: bytes) -> None:
        if self._state == "header":
            self._state, self._skip = ("block" if read[:3] == b"GIF" else "end"), _colour_table(read[10])
        elif self._state == "block":
            self._state = {0x2C: "descriptor", 0x21: "label"}.get(read[0], "end")  # 0x3B: trailer
        elif self._state == "descriptor":
            self.frames += 1
            self._state, self._skip = "sub-blocks", _colour_table(read[8]) + 1  # + LZW code size
        elif self._state == "label":
            self._state = "sub-blocks"
        else:
            self._state, self._skip = ("sub-blocks" if read[0] else "block"), read[0]


def _colour_table(flags: int) -> int:
    return 3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0


def gif_frames(data: bytes) -> int:
    """How many images a GIF holds; more than one means animated."""
    walk = GifFrames()
    walk.feed(data)
    return walk.frames


def image_format(leading: bytes) -> str | None:
    """The format an image's first bytes say (`png`, `jpeg`, `gif`, `webp`), or None."""
    if leading.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if leading.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if leading[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if leading[:4] == b"RIFF" and leading[8:12] == b"WEBP":
        return "webp"
    return None


def _length(response: httpx2.Response) -> int | None:
    try:
        value = int(response.headers.get("content-length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


class _Checker:
    def __init__(self, client: httpx2.AsyncClient, allow_loopback: bool, max_bytes: int,
                 max_redirects: int, resolve: Resolver, lookup_timeout_s: float | None,
                 hosts: HostHealth | None = None, on_behalf: str = "") -> None:
        self._client = client
        self.hosts, self.on_behalf = hosts, on_behalf
        self._allow_loopback = allow_loopback
        self._max_bytes = max_bytes
        self._max_redirects = max_redirects
        self._resolve = resolve
        self._lookup_timeout_s = lookup_timeout_s
        # One lookup per host and port for the whole check (lots share image hosts).
        self._resolved: dict[tuple[str, int], asyncio.Task[list[IPAddress]]] = {}

    async def _lookup(self, host: str, port: int) -> list[IPAddress]:
        """The resolver's answer within an image's time. Shielded from its images' timeouts, the
        lookup once outlived them all: still waiting for a resolver thread after everyone had
        given up, it took one for an answer nobody read (`lookups.py` counts what runs on)."""
        try:
            async with asyncio.timeout(self._lookup_timeout_s):
                return await self._resolve(host, port)
        except TimeoutError:
            raise _NoDnsAnswer(f"no DNS answer for {host} within {self._lookup_timeout_s} s") from None

    async def _cached_resolve(self, host: str, port: int) -> list[IPAddress]:
        task = self._resolved.get((host, port))
        if task is None:
            task = asyncio.ensure_future(self._lookup(host, port))
            # Shielded from its images' timeouts, it may fail after they all gave up: read the
            # error, or asyncio logs "Task exception was never retrieved" for it.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._resolved[(host, port)] = task
        try:
            return await asyncio.shield(task)
        except LookupTryAgain:
            if self._resolved.get((host, port)) is task:  # the retry asks the resolver again
                del self._resolved[(host, port)]
            raise

    async def reason(self, url: str) -> tuple[str | None, int]:
        """(None when the image is usable, otherwise why not; its bytes). A passing failure (no
        connection, a dropped one, HTTP 408/429/5xx) is tried again after each of `RETRY_PAUSES_S`:
        a busy image host must not fail a lot for good (the caller's timeout still bounds the whole
        check). A host taken as down (`image_hosts`), the image's or a redirect's, is not tried:
        its verdict is the image's."""
        for pause in (*RETRY_PAUSES_S, None):
            attempt = await self._once(url)
            if not attempt.passing or pause is None:
                return attempt.why, attempt.size
            await asyncio.sleep(pause)
        raise AssertionError("unreachable: the last pause is None")

    async def _once(self, url: str) -> _Try:
        """One try: why the image is unusable (None: usable), whether trying again may change that."""
        try:
            head = await self._fetch(url, "HEAD")
            # A HEAD saying 0 bytes does not know them (no image file is empty): believed, a 9 MB
            # image counted 0 toward OpenAI's 50 MB a request, and the request was refused.
            if (200 <= head.status < 300 and head.length and head.content_type
                    and _media_type(head.content_type) != "image/gif"):
                why = self._verdict(head)
                if why is not None:
                    return _Try(why, False, head.length)
                first = await self._fetch(url, "GET", _FIRST_BYTES)  # 206, or 200 read no further
                if not 200 <= first.status < 300:
                    return _Try(self._verdict(first), first.status in PASSING_STATUSES, 0)
                # A GIF served under another type (image/jpeg) is read whole for its frames: by its
                # label alone an animated one passed, and OpenAI refuses it (the lot failed).
                if image_format(first.leading or b"") != "gif":
                    why = self._verdict(dataclasses.replace(head, leading=first.leading))
                    return _Try(why, False, head.length)
            answer = await self._fetch(url, "GET")
            return _Try(self._verdict(answer), answer.status in PASSING_STATUSES, answer.length or 0)
        except _Unusable as exc:
            return _Try(str(exc), False, 0)
        except BlockedDestination as exc:
            return _Try(f"refused: {exc}", isinstance(exc, LookupTryAgain), 0)
        except httpx2.HTTPError as exc:
            passing = (isinstance(exc, httpx2.TransportError)
                       and not isinstance(exc, httpx2.UnsupportedProtocol))
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return _Try(why, passing, 0)

    def _verdict(self, answer: _Answer) -> str | None:
        if not 200 <= answer.status < 300:
            return f"HTTP {answer.status}"
        if not _is_image(answer.content_type):
            return f"not an image (Content-Type {answer.content_type or 'missing'!r})"
        if _media_type(answer.content_type) not in IMAGE_TYPES:
            return f"not a PNG, JPEG, WEBP or GIF image (Content-Type {answer.content_type!r})"
        if answer.length is not None and answer.length > self._max_bytes:
            return f"larger than {self._max_bytes} bytes ({answer.length})"
        if answer.frames is not None and answer.frames != 1:
            return "an animated GIF" if answer.frames > 1 else "not a readable GIF"
        if answer.leading is not None and image_format(answer.leading) is None:
            shown = f"starts {answer.leading[:8]!r}" if answer.leading else "is empty"
            return f"not a PNG, JPEG, WEBP or GIF image by its bytes (the body {shown})"
        return None

    async def _fetch(self, url: str, method: str, headers: dict[str, str] = _ACCEPT) -> _Answer:
        current = url
        for _ in range(self._max_redirects + 1):
            response = await self._ask(current, method, headers)
            try:
                if response.has_redirect_location:
                    current = _redirected(response)
                    continue
                length, frames, leading = _length(response), None, None
                content_type = response.headers.get("content-type", "")
                if headers is _FIRST_BYTES and response.is_success:
                    leading = await _first_bytes(response)
                elif method == "GET" and response.is_success and _is_image(content_type):
                    walk = GifFrames()  # stops at the first bytes of anything but a GIF
                    length, leading = await self._measure(response, walk)
                    frames = walk.frames if image_format(leading or b"") == "gif" else None
                return _Answer(response.status_code, content_type, length, frames, leading)
            finally:
                await response.aclose()
        raise _Unusable(f"more than {self._max_redirects} redirects")

    async def _ask(self, hop: str, method: str, headers: dict[str, str]) -> httpx2.Response:
        """The hop's answer (its body still to stream), kept by the host memory against the hop's
        host, not the image's: a redirect to a host that never answers took the redirecting one
        down. Only this try's own timeouts count against it (`image_hosts`)."""
        down = self.hosts.down(self.on_behalf, hop) if self.hosts is not None else None
        if down is not None:
            raise _Unusable(down)
        began = self.hosts.clock() if self.hosts is not None else 0.0
        try:
            await check_destination(hop, self._allow_loopback, self._cached_resolve)
            request = self._client.build_request(method, hop, headers=headers)
            response = await self._client.send(request, stream=True, follow_redirects=False)
        except (httpx2.ConnectTimeout, httpx2.ReadTimeout, httpx2.WriteTimeout, _NoDnsAnswer):
            if self.hosts is not None:
                self.hosts.timed_out(self.on_behalf, hop, began)
            raise
        if self.hosts is not None:
            self.hosts.answered(self.on_behalf, hop)
        return response

    async def _measure(self, response: httpx2.Response, walk: GifFrames) -> tuple[int, bytes | None]:
        """Bytes of the body, reading no further than one byte past the limit (or a GIF's second
        image), and its first bytes; a GIF's images are counted by `walk` as they come."""
        declared = _length(response)
        if declared is not None and declared > self._max_bytes:
            return declared, None
        size, leading = 0, bytearray()
        async for chunk in response.aiter_raw():
            size += len(chunk)
            leading += chunk[:_LEADING_BYTES - len(leading)]
            walk.feed(chunk)
            if size > self._max_bytes or walk.frames > 1:
                break
        return size, bytes(leading)


def _redirected(response: httpx2.Response) -> str:
    # A Location no URL parser reads (`http://[::1`) is this image's fault: InvalidURL is no
    # HTTPError, and it left the whole check (a batch shard stuck, a 500 at the gateway).
    try:
        return str(response.url.join(response.headers["location"]))
    except (httpx2.InvalidURL, ValueError) as exc:
        raise _Unusable(f"a redirect to a Location that is not a URL: {exc}") from exc


async def _first_bytes(response: httpx2.Response) -> bytes:
    leading = bytearray()
    async for chunk in response.aiter_raw():
        leading += chunk[:_LEADING_BYTES - len(leading)]
        if len(leading) == _LEADING_BYTES:
            break
    return bytes(leading)


async def check_images(urls: Sequence[str], client: httpx2.AsyncClient, allow_loopback: bool,
                       concurrency: int = 16, *, max_bytes: int = MAX_IMAGE_BYTES,
                       max_redirects: int = MAX_REDIRECTS, timeout_s: float | None = 30.0,
                       resolve: Resolver = resolve_host, shares: Shares | None = None,
                       hosts: HostHealth | None = None) -> ImageCheck:
    """Check every URL, `concurrency` at a time; each is bounded by `timeout_s` (redirects included).

    With `shares` (as many places as `client` has connections), each URL's check first takes a
    place of the requester's share (`lookups.on_behalf_of`), and its time starts once it has one:
    one client's checks of hosts that never answer held every connection of a shared client, and
    another client's images ran out of time waiting for one ("no answer within 10 s").
    With `hosts`, a host whose tries keep running into their own timeouts is taken as down for the
    requester, and its other URLs are unreachable at once (`image_hosts`).
    Within `image_budget.started_by`, a URL whose turn comes after its deadline is left unchecked.
    """
    unique = list(dict.fromkeys(urls))
    on_behalf = requester()
    checker = _Checker(client, allow_loopback, max_bytes, max_redirects, resolve, timeout_s, hosts, on_behalf)
    gate = asyncio.Semaphore(max(1, concurrency))  # first come, first served: URLs start in order
    window = current_window()

    def place() -> AbstractAsyncContextManager[None]:
        return shares.hold(on_behalf) if shares is not None else nullcontext()

    async def one(index: int, url: str) -> tuple[str | None, int] | None:
        async with gate, place():
            if window is not None and index >= window.always and time.monotonic() >= window.deadline:
                return None
            try:
                async with asyncio.timeout(timeout_s):
                    return await checker.reason(url)
            except TimeoutError:  # a host trickling bytes, or slow in every try: not for `hosts`
                return f"no answer within {timeout_s} s", 0

    answers = await asyncio.gather(*(one(index, url) for index, url in enumerate(unique)))
    verdicts = {url: verdict for url, verdict in zip(unique, answers, strict=True) if verdict is not None}
    failed = {url: reason for url, (reason, _) in verdicts.items() if reason is not None}
    return ImageCheck(valid=tuple(url for url in verdicts if url not in failed), unreachable=tuple(failed),
                      reasons=failed,
                      sizes={url: size for url, (reason, size) in verdicts.items() if reason is None},
                      unchecked=tuple(url for url in unique if url not in verdicts))
