"""Scenario 5, image checks: URLs per second through `lotlens_common.images.check_images` against the
bench's image server, at the vision-batcher's concurrency (64) and with its client settings.

Floors: the same URLs with plain httpx2 HEAD requests at the same concurrency, (a) one connection
per worker (the fastest plain httpx2), (b) through one shared client built like the vision-batcher's
(`httpx2.AsyncClient(timeout=10, follow_redirects=False)`: 100 connections, 20 kept alive).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

import httpx2

from bench import floor
from bench.context import Context
from bench.stats import Row
from lotlens_common.images import check_images


def urls(base: str, count: int) -> list[str]:
    """`count` distinct image URLs on the server."""
    tag = uuid.uuid4().hex[:8]
    return [f"{base}/check/{tag}/{i}.png" for i in range(count)]


def checked_rate(url_list: Sequence[str], concurrency: int) -> float:
    """URLs per second through check_images (all must come back valid)."""

    async def run() -> float:
        async with httpx2.AsyncClient(timeout=10.0, follow_redirects=False) as client:
            started = time.perf_counter()
            result = await check_images(url_list, client, allow_loopback=True, concurrency=concurrency)
            elapsed = time.perf_counter() - started
        if result.unreachable:
            raise RuntimeError(
                f"{len(result.unreachable)} images unreachable: {list(result.reasons.items())[:2]}"
            )
        return len(url_list) / elapsed

    return asyncio.run(run())


def floor_rate(url_list: Sequence[str], concurrency: int) -> float:
    """URLs per second with plain httpx2 HEADs, one connection per worker."""
    return len(url_list) / floor.head_urls(url_list, concurrency)


def shared_rate(url_list: Sequence[str], concurrency: int) -> float:
    """URLs per second with plain httpx2 HEADs through one shared client (vision-batcher settings)."""
    return len(url_list) / floor.head_urls_shared(url_list, concurrency)


def run(ctx: Context) -> list[Row]:
    """Floors and check_images side by side, run by run, on fresh URLs each time."""
    s = ctx.settings
    got: dict[str, list[float]] = {"checked": [], "floor": [], "shared": []}
    for number in range(1, s.runs + 1):
        got["floor"].append(floor_rate(urls(ctx.images, s.image_urls), s.image_concurrency))
        got["shared"].append(shared_rate(urls(ctx.images, s.image_urls), s.image_concurrency))
        got["checked"].append(checked_rate(urls(ctx.images, s.image_urls), s.image_concurrency))
        ctx.log(
            f"images run {number}: check_images {got['checked'][-1]:.0f} URLs/s, plain httpx2 "
            f"{got['floor'][-1]:.0f}/s, plain httpx2 on one shared client {got['shared'][-1]:.0f}/s"
        )
    what = f"({s.image_urls} URLs, concurrency {s.image_concurrency})"
    return [
        Row(
            "5 images",
            f"URLs checked/s {what}",
            "URLs/s",
            got["checked"],
            got["floor"],
            higher_is_better=True,
            notes="floor = plain httpx2 HEAD, one connection per worker",
        ),
        Row(
            "5 images",
            f"URLs checked/s vs shared-client httpx2 {what}",
            "URLs/s",
            got["checked"],
            got["shared"],
            higher_is_better=True,
            notes="floor = plain httpx2 HEAD through one client built like the vision-batcher's",
        ),
    ]
