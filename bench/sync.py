"""Scenario 7, synchronous mode: one lot (its images, the bench's languages) from POST to 200.

The stand-in answers with zero model latency, so what is left is LotLens's own work: signature
and validation, the image checks (HEAD of every image, through the SSRF guard), building the
requests, parsing the answers and the response. Floor: the model calls alone, the very vision
and translation requests sent straight to the stand-in one after the other, in the same run.
Overhead = total - model time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from bench import payload
from bench.config import gateway
from bench.context import Context
from bench.stats import Row, median, percentile
from lotlens_common.model.openai_client import call_responses, make_openai_client
from lotlens_common.model.settings import ModelSettings
from lotlens_common.model.translation import target_languages, translation_request_body
from lotlens_common.model.vision import parse_vision_response, vision_request_body

REQUESTS = 40


def model_times(standin: str, lots: list[dict[str, Any]], languages: Sequence[str]) -> list[float]:
    """Seconds the same model calls take per lot when sent straight to the stand-in (one client,
    kept alive, like the gateway's)."""

    async def run() -> list[float]:
        models = ModelSettings()
        times: list[float] = []
        async with make_openai_client("bench", standin, 30) as client:
            for lot in lots:
                urls = [image["url"] for image in lot["images"]]
                started = time.perf_counter()
                request = vision_request_body(lot["additional_info"], urls, models)
                vision = await call_responses(client, request)
                if target_languages(languages):
                    english = parse_vision_response(vision)
                    await call_responses(client, translation_request_body(english, languages, models))
                times.append(time.perf_counter() - started)
        return times

    return asyncio.run(run())


def one_run(ctx: Context) -> tuple[list[float], list[float]]:
    """(total seconds, model seconds) of each synchronous request of one run."""
    s = ctx.settings
    totals: list[float] = []
    sent: list[dict[str, Any]] = []
    for _ in range(REQUESTS):
        lot = payload.lots(1, s.images_per_lot, ctx.images)
        body = payload.submission(ctx.key, lot, s.languages)
        started = time.perf_counter()
        response = ctx.http.post(f"{gateway()}/api/v1/generate-descriptions", content=body,
                                 headers={"Content-Type": "application/json"})
        totals.append(time.perf_counter() - started)
        answered = response.json()
        if response.status_code != 200 or answered["lots"][0]["status"] != "completed":
            raise RuntimeError(f"synchronous request failed: {response.status_code} {str(answered)[:300]}")
        sent.append(lot[0])
    return totals, model_times(f"http://127.0.0.1:{s.stack.standin_port}/v1", sent, s.languages)


def run(ctx: Context) -> list[Row]:
    """p50/p99 of the total and of the model time, and the overhead, run by run."""
    s = ctx.settings
    rows: dict[str, tuple[list[float], list[float]]] = {"p50": ([], []), "p99": ([], [])}
    overhead: list[float] = []
    for number in range(1, s.runs + 1):
        totals, models = one_run(ctx)
        for name, q in (("p50", 50.0), ("p99", 99.0)):
            rows[name][0].append(percentile(totals, q) * 1000)
            rows[name][1].append(percentile(models, q) * 1000)
        overhead.append(median([t - m for t, m in zip(totals, models, strict=True)]) * 1000)
        ctx.log(f"sync run {number}: p50 {rows['p50'][0][-1]:.0f} ms (model {rows['p50'][1][-1]:.0f} ms), "
                f"overhead {overhead[-1]:.0f} ms")
    what = f"1 lot x {s.images_per_lot} images, {len(s.languages)} languages, {REQUESTS} requests"
    return [
        *(Row("7 sync", f"POST -> 200 {name} ({what})", "ms", measured, floor,
              notes="floor = the same model calls straight to the stand-in (zero latency)")
          for name, (measured, floor) in rows.items()),
        Row("7 sync", "overhead = total - model time, median", "ms", overhead, [],
            notes="signature, validation, image checks (HEAD each image), parsing, response"),
    ]
