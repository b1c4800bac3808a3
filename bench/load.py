"""`python -m bench.load`: an asyncio httpx2 load generator, bounded in requests and in time.

    python -m bench.load URL [URL ...] --connections 64 --requests 4000 --seconds 5 \
        --header "X-Signature: sha256=..."

Each URL is loaded in turn (a floor and the real thing share one process start): `connections`
workers, each with its own one-connection httpx2 client, GET the URL until the request budget or
the time is spent. Prints one JSON line, a list with per URL: requests, errors, status counts,
elapsed seconds, requests per second, p50/p99 latency (ms). Run it as a subprocess so its
event loop does not share a GIL with what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx2
import orjson

from bench.stats import percentile

ONE = httpx2.Limits(max_connections=1, max_keepalive_connections=1)


async def run(
    url: str, headers: dict[str, str], connections: int, requests: int, seconds: float
) -> dict[str, Any]:
    """Load one URL; the statistics as a dict."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    issued = 0
    # One client (one connection) per worker: httpcore2's shared pool does O(connections) work per
    # request under one lock, and at 64 connections the generator, not the server, was the limit.
    clients = [httpx2.AsyncClient(limits=ONE, timeout=30.0, headers=headers) for _ in range(connections)]
    try:
        # Open every connection first (not counted).
        await asyncio.gather(*(c.get(url) for c in clients), return_exceptions=True)
        started = time.perf_counter()
        deadline = started + seconds

        async def worker(client: httpx2.AsyncClient) -> None:
            nonlocal issued
            while issued < requests and time.perf_counter() < deadline:
                issued += 1
                sent = time.perf_counter()
                try:
                    response = await client.get(url)
                    statuses[str(response.status_code)] += 1
                except httpx2.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                latencies.append((time.perf_counter() - sent) * 1000)

        await asyncio.gather(*(worker(c) for c in clients))
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    ok = sum(n for code, n in statuses.items() if code.startswith("2"))
    return {
        "requests": len(latencies),
        "ok": ok,
        "errors": len(latencies) - ok,
        "statuses": dict(statuses),
        "elapsed_s": elapsed,
        "rps": ok / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    args = parser.parse_args(argv)
    headers = {name.strip(): value.strip() for name, _, value in (h.partition(":") for h in args.header)}
    results = [
        asyncio.run(run(url, headers, args.connections, args.requests, args.seconds)) for url in args.urls
    ]
    print(orjson.dumps(results).decode(), flush=True)


if __name__ == "__main__":
    main()
