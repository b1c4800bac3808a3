"""Scenario 4, webhooks: deliveries per second to a local receiver answering 200, and the delay from
`JobCompleted` (`occurred_at`) to each delivery's first attempt (the receiver's arrival time).

A job of H lots is submitted whose lots each name a distinct webhook URL on the receiver, so its
completion schedules H deliveries at once. Floor: plain httpx2 POSTing the very bodies the receiver
got, to the same URLs, at the dispatcher's concurrency.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx2
import orjson

from bench import floor, intake, kafkautil, payload, pipeline
from bench.config import topic
from bench.context import Context
from bench.stats import Row, percentile

Arrival = tuple[float, str, str]


def records(receiver: str) -> list[Arrival]:
    """Everything the receiver got since its last reset: (unix time, path, body)."""
    rows: list[list[Any]] = orjson.loads(httpx2.get(f"{receiver}/_records", timeout=30).content)
    return [(float(t), str(path), str(body)) for t, path, body in rows]


def reset(receiver: str) -> None:
    """Forget the receiver's arrivals."""
    httpx2.get(f"{receiver}/_reset", timeout=30).raise_for_status()


def wait_arrivals(receiver: str, count: int, timeout_s: float) -> list[Arrival]:
    """Wait until `count` POSTs arrived (or the time is up); the arrivals."""
    deadline = time.monotonic() + timeout_s
    got = records(receiver)
    while len(got) < count and time.monotonic() < deadline:
        time.sleep(0.25)
        got = records(receiver)
    return got


@dataclass(frozen=True)
class Delivered:
    """One run's deliveries: how many, over what span, and each one's delay after JobCompleted."""

    count: int
    span_s: float
    delays_s: list[float]

    @property
    def rate_per_s(self) -> float:
        """Deliveries per second between the first and the last arrival."""
        return (self.count - 1) / self.span_s if self.span_s else 0.0


def summary(arrivals: list[Arrival], completed_at: float) -> Delivered:
    """First attempt per URL, relative to JobCompleted's `occurred_at` (unix seconds)."""
    first: dict[str, float] = {}
    for at, path, _ in sorted(arrivals):
        first.setdefault(path, at)
    times = sorted(first.values())
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return Delivered(len(times), span, [t - completed_at for t in times])


def floor_rate(receiver: str, arrivals: list[Arrival], concurrency: int) -> float:
    """Plain httpx2 posting the same bodies to the same URLs; deliveries per second."""
    pairs = [(f"{receiver}{path}", body.encode()) for _, path, body in arrivals]
    elapsed = floor.post_bodies(pairs, concurrency)
    return len(pairs) / elapsed


def _hook_url(prefix: str, number: int) -> str:
    return f"{prefix}/{number}"


def run(ctx: Context) -> list[Row]:
    """Per run: a job of H lots with H distinct webhook URLs, then the floor replaying its bodies."""
    s = ctx.settings
    got: dict[str, list[float]] = {"rate": [], "floor": [], "p50": [], "p99": [], "first": []}
    for number in range(1, s.runs + 1):
        ctx.wait_idle()
        reset(ctx.receiver)
        prefix = f"{ctx.receiver}/hook/{uuid.uuid4().hex[:8]}"
        lots = payload.lots(s.hooks, 1, ctx.images, webhook=partial(_hook_url, prefix))
        offsets = kafkautil.end_offsets([topic("completions")])
        _, accepted = intake.submit(ctx.http, payload.submission(ctx.key, lots, s.languages))
        job_id = accepted["job_id"]
        pipeline.wait_done(ctx.http, ctx.key, job_id, s.pipeline_timeout_s)
        arrivals = wait_arrivals(ctx.receiver, s.hooks, 120.0)
        completed = [at for kind, at, _ in kafkautil.job_events(offsets, job_id) if kind == "JobCompleted"]
        if not completed or len(arrivals) < s.hooks:
            raise RuntimeError(
                f"webhooks: {len(arrivals)}/{s.hooks} arrived, JobCompleted seen: {bool(completed)}"
            )
        done = summary(arrivals, min(completed).timestamp())
        reset(ctx.receiver)
        floor_per_s = floor_rate(ctx.receiver, arrivals, s.hook_concurrency)
        got["rate"].append(done.rate_per_s)
        got["floor"].append(floor_per_s)
        got["first"].append(min(done.delays_s) * 1000)
        got["p50"].append(percentile(done.delays_s, 50) * 1000)
        got["p99"].append(percentile(done.delays_s, 99) * 1000)
        ctx.log(
            f"webhooks run {number}: {done.rate_per_s:.0f}/s (floor {floor_per_s:.0f}/s), first attempt "
            f"{got['first'][-1]:.0f} ms, p99 {got['p99'][-1]:.0f} ms after JobCompleted"
        )
    span_floor = [s.hooks / rate * 1000 for rate in got["floor"]]
    return [
        Row(
            "4 webhooks",
            f"deliveries/s ({s.hooks} URLs, 1 job, {s.stack.dispatchers} dispatcher instance(s))",
            "deliveries/s",
            got["rate"],
            got["floor"],
            higher_is_better=True,
            notes=f"floor = plain httpx2, same bodies, concurrency {s.hook_concurrency}",
        ),
        Row(
            "4 webhooks",
            "JobCompleted -> first delivery arrives",
            "ms",
            got["first"],
            [],
            notes="no floor: the dispatcher's consume + schedule + claim latency",
        ),
        Row(
            "4 webhooks",
            "JobCompleted -> first attempt, p50",
            "ms",
            got["p50"],
            [],
            notes="includes queueing behind the other deliveries of the same job",
        ),
        Row(
            "4 webhooks",
            "JobCompleted -> first attempt, p99",
            "ms",
            got["p99"],
            span_floor,
            notes="floor = time plain httpx2 needs to post all the bodies",
        ),
    ]
