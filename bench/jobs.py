"""Scenarios 1 and 2 run together: each run submits one N-lot job (intake) and follows it to the end
(pipeline); the peak memory of scenario 6 is taken over these runs.

The measured runs draw their lots' image URLs from a small pool (`image_pool` distinct URLs per
job), so they measure the event pipeline rather than image fetching (scenario 5 measures that, and
the floor has no HTTP in it). One extra job whose every image URL is distinct (`distinct_lots`
lots) shows what the vision-batcher's image checks add to a realistic job.
"""

from __future__ import annotations

import os
import signal
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx2

from bench import cpu, floor, intake, kafkautil, payload, pipeline, stackctl
from bench.config import pipeline_topics
from bench.context import Context
from bench.memory import MemoryWatch
from bench.stats import Row, median

# Pipeline stage -> the floor hop that does the same Kafka work (None: no event-level floor).
STAGE_FLOOR = {
    "vision submit": "hop LotSubmitted",
    "vision batch+collect": "hop VisionCompleted",
    "translation submit": None,
    "translation batch+collect": "hop TranslationCompleted",
    "projection+JobCompleted": "hop JobCompleted",
}
# The services that start on a job's events while its intake is still being answered.
CONSUMERS = ("vision-batcher", "translator", "result-store", "webhook-dispatcher")


@dataclass
class JobRun:
    """One submitted job followed to the end, with the floors measured next to it."""

    intake_s: float
    intake_floor: dict[str, float]
    pipeline_s: float
    pipeline_floor: dict[str, float]
    stages: dict[str, float]
    summary: dict[str, Any] = field(default_factory=dict)
    paused_intake_s: float = 0.0
    # CPU-seconds per part of the stack from the 201 to completion, and what the floor's run used.
    cpu_s: dict[str, float] = field(default_factory=dict)
    floor_cpu_s: float = 0.0


def one_job(ctx: Context, lots: list[dict[str, Any]], intake_topic: str, watch: MemoryWatch | None) -> JobRun:
    """Intake floor, submit, wait for completion, read the events back, pipeline floor."""
    s = ctx.settings
    ctx.wait_idle()
    body = payload.submission(ctx.key, lots, s.languages)
    intake_floor = intake.floor_run(body, intake_topic, ctx.conn)
    ctx.wait_quiet()
    if watch is not None:
        watch.start()
    offsets = kafkautil.end_offsets(pipeline_topics())
    batches_before = _standin_batches(ctx)
    seconds, accepted = intake.submit(ctx.http, body)
    accepted_at = datetime.now(UTC)
    cpu_at_201 = cpu.snapshot()
    job_id = accepted["job_id"]
    status = pipeline.wait_done(ctx.http, ctx.key, job_id, s.pipeline_timeout_s)
    cpu_at_end = cpu.snapshot()
    job_cpu = cpu.used(cpu_at_201, cpu_at_end)
    job_cpu.update(cpu.postgres_by_service(cpu_at_201, cpu_at_end, cpu.backend_names(ctx.conn)))
    events = kafkautil.job_events(offsets, job_id)
    done_s = pipeline.finished_after(events, accepted_at)
    stats = pipeline.event_stats(events)
    ctx.wait_quiet()  # the floor is not measured in the job's aftermath
    cpu_at_floor = cpu.snapshot()
    hop_floor = pipeline.floor_run(
        len(lots), s.languages, {k: size for k, (_, size) in stats.items()}, ctx.conn
    )
    floor_cpu = cpu.used(cpu_at_floor, cpu.snapshot())
    ctx.log("pipeline floor: " + ", ".join(f"{part} {value:.2f}s" for part, value in hop_floor.items()))
    progress = status.get("progress", {})
    # Exactly once: one result event per lot and stage; more would be a lot answered twice.
    results = {kind: stats.get(kind, (0, 0))[0] for kind in ("VisionCompleted", "TranslationCompleted")}
    summary = {
        "standin_batches_created": _standin_batches(ctx) - batches_before,
        "result_events": results,
        "job_id": job_id,
        "status": status.get("status"),
        "processed": progress.get("processed_lots"),
        "failed": progress.get("failed_lots"),
        "events": stats,
        "first_last_s": pipeline.event_spans(events),
    }
    ctx.log(
        f"{len(lots)} lots: intake {seconds:.2f}s (floor {intake_floor['total_s']:.3f}s), pipeline "
        f"{done_s:.1f}s (floor {hop_floor['total_s']:.2f}s), {summary['status']} {summary['processed']} "
        f"processed, {summary['failed']} failed; {summary['standin_batches_created']} batches created at "
        f"the stand-in; result events {results}; CPU-s {cpu.stack_total(job_cpu):.1f} "
        f"(floor {cpu.floor_total(floor_cpu):.2f}) {', '.join(f'{k} {v:.1f}' for k, v in job_cpu.items())}"
    )
    return JobRun(seconds, intake_floor, done_s, hop_floor, pipeline.stage_times(events), summary,
                  cpu_s=job_cpu, floor_cpu_s=cpu.floor_total(floor_cpu))


def paused_intake(ctx: Context, lots: list[dict[str, Any]]) -> float:
    """The same intake with the consumers paused (SIGSTOP): the gateway alone, as in the floor.

    On these 2 cores the three consumers of the submissions topic start on the first lots while
    the gateway is still publishing the rest, and take CPU from it; in a deployment they run
    elsewhere.
    """
    ctx.wait_idle()
    body = payload.submission(ctx.key, lots, ctx.settings.languages)
    paused = [pid for name, pid in stackctl.pids().items() if name in CONSUMERS]
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        seconds, accepted = intake.submit(ctx.http, body)
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    ctx.log(f"{len(lots)} lots: intake with the consumers paused {seconds:.2f}s")
    # Finished before the next measured run starts (no lag is not enough: batches are still open).
    pipeline.wait_done(ctx.http, ctx.key, accepted["job_id"], ctx.settings.pipeline_timeout_s)
    return seconds


def warm_up(ctx: Context, lots: int) -> None:
    """One job to its end, not measured: each later run then meets the stack as a long-running one
    is, as the floor meets the broker and PostgreSQL (every run after the first already followed an
    unmeasured job, `paused_intake`'s)."""
    ctx.wait_idle()
    s = ctx.settings
    body = payload.submission(ctx.key, payload.lots(lots, s.images_per_lot, ctx.images, pool=s.image_pool),
                              s.languages)
    _, accepted = intake.submit(ctx.http, body)
    pipeline.wait_done(ctx.http, ctx.key, accepted["job_id"], s.pipeline_timeout_s)
    ctx.log(f"warm-up job of {lots} lots done")


def _standin_batches(ctx: Context) -> int:
    url = f"http://127.0.0.1:{ctx.settings.stack.standin_port}/_standin/stats"
    return int(httpx2.get(url, timeout=30).json()["batches_created"])


def run(ctx: Context, watch: MemoryWatch) -> tuple[list[Row], dict[str, list[float]]]:
    """The intake and pipeline rows, and the stage timings of every run (for the chart)."""
    s = ctx.settings
    intake_topic = f"bench-floor-intake-{uuid.uuid4().hex[:8]}"
    kafkautil.create_topics([intake_topic])
    runs: list[JobRun] = []
    distinct: JobRun | None = None
    try:
        if s.warmup_lots:
            warm_up(ctx, s.warmup_lots)
        for number in range(s.runs):
            lots = payload.lots(s.lots, s.images_per_lot, ctx.images, pool=s.image_pool)
            runs.append(one_job(ctx, lots, intake_topic, watch if number == 0 else None))
            runs[-1].paused_intake_s = paused_intake(
                ctx, payload.lots(s.lots, s.images_per_lot, ctx.images, pool=s.image_pool))
        if s.distinct_lots:
            lots = payload.lots(s.distinct_lots, s.images_per_lot, ctx.images)
            distinct = one_job(ctx, lots, intake_topic, None)
            # The image part of its floor: plain httpx2 HEADs of the same URLs, at the checker's concurrency.
            urls = [image["url"] for lot in lots for image in lot["images"]]
            distinct.pipeline_floor["HEAD urls"] = floor.head_urls(urls, s.image_concurrency)
    finally:
        kafkautil.delete_topics([intake_topic])
    stages: dict[str, list[float]] = {}
    for job in runs:
        for name, value in job.stages.items():
            stages.setdefault(name, []).append(value)
    return _rows(ctx, runs, stages) + (_distinct_rows(ctx, distinct) if distinct else []), stages


def _parts(jobs: list[JobRun], attr: str) -> dict[str, list[float]]:
    parts: dict[str, list[float]] = {}
    for job in jobs:
        for name, value in getattr(job, attr).items():
            parts.setdefault(name, []).append(value)
    return parts


def _rows(ctx: Context, runs: list[JobRun], stages: dict[str, list[float]]) -> list[Row]:
    s, n = ctx.settings, ctx.settings.lots
    shape = f"{n} lots x {s.images_per_lot} images, {len(s.languages)} languages"
    intake_parts, hop_parts = _parts(runs, "intake_floor"), _parts(runs, "pipeline_floor")
    pipeline_s = [job.pipeline_s for job in runs]
    config = (
        f"stand-in batch phases {s.stack.standin_phase_s}s each, window {s.stack.window_s}s, "
        f"poll {s.stack.poll_interval_s}s, {s.image_pool} distinct image URLs per job"
    )
    rows = [
        Row(
            "1 intake",
            f"first byte -> 201 ({shape})",
            "s",
            [job.intake_s for job in runs],
            intake_parts["total_s"],
            notes="floor = orjson parse + bare produce (acks=all) + COPY of the lot rows",
            extra={"floor_parts_median_s": {k: median(v) for k, v in intake_parts.items()}},
        ),
        Row(
            "1 intake",
            f"first byte -> 201, consumers paused ({shape})",
            "s",
            [job.paused_intake_s for job in runs],
            intake_parts["total_s"],
            notes="the gateway alone: vision-batcher, translator, result-store, dispatcher SIGSTOPped",
        ),
        Row(
            "2 pipeline",
            f"201 -> completed ({n} lots)",
            "s",
            pipeline_s,
            hop_parts["total_s"],
            notes=f"{config}; floor = 4 bare Kafka hops + COPY",
            extra={
                "floor_parts_median_s": {k: median(v) for k, v in hop_parts.items()},
                "jobs": [job.summary for job in runs],
            },
        ),
        Row(
            "2 pipeline",
            f"lots per second ({n} lots)",
            "lots/s",
            [n / t for t in pipeline_s],
            [n / t for t in hop_parts["total_s"]],
            higher_is_better=True,
        ),
    ]
    rows += _cpu_rows(runs, n)
    for stage, hop in STAGE_FLOOR.items():
        rows.append(
            Row(
                "2 pipeline",
                f"stage: {stage}",
                "s",
                stages.get(stage, []),
                hop_parts.get(hop, []) if hop else [],
                notes=f"floor = {hop}" if hop else "no event-level floor (DB work + batch file upload)",
            )
        )
    return rows


def _cpu_rows(runs: list[JobRun], lots: int) -> list[Row]:
    """The job's CPU-seconds, all of the stack against its floor's, then each part's."""
    rows = [
        Row(
            "2 pipeline",
            f"CPU-seconds 201 -> completed, LotLens + Kafka + PostgreSQL ({lots} lots)",
            "CPU-s",
            [cpu.stack_total(job.cpu_s) for job in runs],
            [job.floor_cpu_s for job in runs],
            notes="/proc utime+stime; the stand-in's CPU is not in it (below); floor = the CPU of "
            "the floor's run (bench + Kafka + PostgreSQL)",
        )
    ]
    split = sorted({key for job in runs for key in job.cpu_s if key.startswith(cpu.POSTGRES_FOR)})
    for part in (*cpu.STACK, *split, cpu.STANDIN):
        rows.append(
            Row(
                "2 pipeline",
                f"CPU-seconds 201 -> completed: {part} ({lots} lots)",
                "CPU-s",
                [job.cpu_s.get(part, 0.0) for job in runs],
                [],
            )
        )
    return rows


def _distinct_rows(ctx: Context, job: JobRun) -> list[Row]:
    s = ctx.settings
    urls = s.distinct_lots * s.images_per_lot
    vision = job.stages.get("vision submit", 0.0)
    return [
        Row(
            "2 pipeline",
            f"201 -> completed ({s.distinct_lots} lots, {urls} distinct image URLs, 1 run)",
            "s",
            [job.pipeline_s],
            [job.pipeline_floor["total_s"] + job.pipeline_floor["HEAD urls"]],
            notes="floor = 4 bare Kafka hops + COPY + plain httpx2 HEAD of the URLs (64 at a time)",
            extra={"stages": job.stages, "job": job.summary},
        ),
        Row(
            "2 pipeline",
            f"stage: vision submit with {urls} image checks (1 run)",
            "s",
            [vision],
            [job.pipeline_floor["hop LotSubmitted"] + job.pipeline_floor["HEAD urls"]],
            notes=(
                f"= {urls / vision if vision else 0:.0f} URLs/s checked inside the vision-batcher; "
                "floor = hop LotSubmitted + plain httpx2 HEAD of the URLs"
            ),
        ),
    ]
