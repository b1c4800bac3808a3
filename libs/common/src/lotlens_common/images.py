"""Is an image URL usable? Reachable (2xx), an image (`image/*`), at most 10 MB — and safe to fetch.

Each URL gets a HEAD request; a GET (streamed, read no further than the size limit) follows
when HEAD is refused or does not tell the type and size. Redirects are followed by hand, at
most `max_redirects`, and every hop goes through the SSRF guard of `lotlens_common.urls` first.
Unreachable images are not an error for the caller: they become the lot's `missing_images`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from lotlens_common.urls import BlockedDestination, IPAddress, Resolver, check_destination, resolve_host

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_REDIRECTS = 3
_ACCEPT = {"Accept": "image/*", "User-Agent": "LotLens-ImageCheck/1.0"}


@dataclass(frozen=True)
class ImageCheck:
    """The URLs in the order given (duplicates once): the usable ones and the others, with why."""

    valid: tuple[str, ...]
    unreachable: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)


class _Unusable(Exception):
    """This image cannot be used; the message says why."""


@dataclass(frozen=True)
class _Answer:
    status: int
    content_type: str
    length: int | None


def _is_image(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower().startswith("image/")


def _length(response: httpx.Response) -> int | None:
    try:
        value = int(response.headers.get("content-length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


class _Checker:
    def __init__(self, client: httpx.AsyncClient, allow_loopback: bool, max_bytes: int,
                 max_redirects: int, resolve: Resolver) -> None:
        self._client = client
        self._allow_loopback = allow_loopback
        self._max_bytes = max_bytes
        self._max_redirects = max_redirects
        self._resolve = resolve
        # One lookup per host and port for the whole check (lots share image hosts).
        self._resolved: dict[tuple[str, int], asyncio.Task[list[IPAddress]]] = {}

    async def _cached_resolve(self, host: str, port: int) -> list[IPAddress]:
        task = self._resolved.get((host, port))
        if task is None:
            task = asyncio.ensure_future(self._resolve(host, port))
            self._resolved[(host, port)] = task
        return await asyncio.shield(task)

    async def reason(self, url: str) -> str | None:
        """None when the image is usable, otherwise why not."""
        try:
            head = await self._fetch(url, "HEAD")
            if 200 <= head.status < 300 and head.length is not None and head.content_type:
                return self._verdict(head)
            return self._verdict(await self._fetch(url, "GET"))
        except _Unusable as exc:
            return str(exc)
        except BlockedDestination as exc:
            return f"refused: {exc}"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def _verdict(self, answer: _Answer) -> str | None:
        if not 200 <= answer.status < 300:
            return f"HTTP {answer.status}"
        if not _is_image(answer.content_type):
            return f"not an image (Content-Type {answer.content_type or 'missing'!r})"
        if answer.length is not None and answer.length > self._max_bytes:
            return f"larger than {self._max_bytes} bytes ({answer.length})"
        return None

    async def _fetch(self, url: str, method: str) -> _Answer:
        current = url
        for _ in range(self._max_redirects + 1):
            await check_destination(current, self._allow_loopback, self._cached_resolve)
            request = self._client.build_request(method, current, headers=_ACCEPT)
            response = await self._client.send(request, stream=True, follow_redirects=False)
            try:
                if response.has_redirect_location:
                    current = str(response.url.join(response.headers["location"]))
                    continue
                length = _length(response)
                if method == "GET" and response.is_success and _is_image(
                        response.headers.get("content-type", "")):
                    length = await self._measure(response)
                return _Answer(response.status_code, response.headers.get("content-type", ""), length)
            finally:
                await response.aclose()
        raise _Unusable(f"more than {self._max_redirects} redirects")

    async def _measure(self, response: httpx.Response) -> int:
        """Bytes of the body, reading no further than one byte past the limit."""
        declared = _length(response)
        if declared is not None and declared > self._max_bytes:
            return declared
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > self._max_bytes:
                break
        return size


async def check_images(urls: Sequence[str], client: httpx.AsyncClient, allow_loopback: bool,
                       concurrency: int = 16, *, max_bytes: int = MAX_IMAGE_BYTES,
                       max_redirects: int = MAX_REDIRECTS, timeout_s: float | None = 30.0,
                       resolve: Resolver = resolve_host) -> ImageCheck:
    """Check every URL, `concurrency` at a time; each is bounded by `timeout_s` (redirects included)."""
    unique = list(dict.fromkeys(urls))
    checker = _Checker(client, allow_loopback, max_bytes, max_redirects, resolve)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(url: str) -> str | None:
        async with gate:
            try:
                async with asyncio.timeout(timeout_s):
                    return await checker.reason(url)
            except TimeoutError:
                return f"no answer within {timeout_s} s"

    reasons = await asyncio.gather(*(one(url) for url in unique))
    valid = tuple(url for url, reason in zip(unique, reasons, strict=True) if reason is None)
    failed = {url: reason for url, reason in zip(unique, reasons, strict=True) if reason is not None}
    return ImageCheck(valid=valid, unreachable=tuple(failed), reasons=failed)
