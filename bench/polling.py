"""Scenario 3, polling: batch-status and batch-results under 64 connections from another process.

Floors: (a) a bare Starlette endpoint on uvicorn answering the very same bytes, loaded by the same
generator; (b) the same SQL the gateway runs per request (rate-limit upsert, then the reads), run
directly with psycopg2 on one connection in a loop.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2

from bench import floor, intake, payload, pipeline, procs
from bench.config import gateway
from bench.context import Context
from bench.payload import job_headers
from bench.stats import Row

RATE = (
    "INSERT INTO rate_limit_windows (client_id, mode, window_start, count) VALUES (%s, 'polling', %s, 1) "
    "ON CONFLICT (client_id, mode, window_start) DO UPDATE SET count = rate_limit_windows.count + 1 "
    "RETURNING count"
)
JOB = "SELECT * FROM jobs WHERE job_id = %s"
BATCHES = "SELECT stage, batch_id FROM openai_batches WHERE job_id = %s ORDER BY created_at, batch_id"
LOTS = "SELECT * FROM lots WHERE job_id = %s ORDER BY seq, lot_id"
TEXTS = "SELECT * FROM descriptions WHERE job_id = %s AND lot_id = ANY(%s) ORDER BY lot_id"


def endpoints(job_id: str) -> dict[str, str]:
    """name -> URL of the two polled endpoints."""
    return {
        "batch-status": f"{gateway()}/api/v1/batch-status/{job_id}",
        "batch-results": f"{gateway()}/api/v1/batch-results/{job_id}",
    }


def saved_body(url: str, headers: dict[str, str]) -> Path:
    """The gateway's answer for the URL, saved for the bare app to serve."""
    response = httpx2.get(url, headers=headers, timeout=30)
    response.raise_for_status()
    path = Path(tempfile.mkstemp(prefix="bench-body-", suffix=".json")[1])
    path.write_bytes(response.content)
    return path


def _sql_status(cur: Any, job_id: str) -> None:
    cur.execute(RATE, ("bench-floor", _window()))
    cur.fetchall()
    cur.execute(JOB, (job_id,))
    cur.fetchall()
    cur.execute(BATCHES, (job_id,))
    cur.fetchall()


def _sql_results(cur: Any, job_id: str) -> None:
    cur.execute(RATE, ("bench-floor", _window()))
    cur.fetchall()
    cur.execute(JOB, (job_id,))
    cur.fetchall()
    cur.execute(LOTS, (job_id,))
    ids = [row[1] for row in cur.fetchall()]
    cur.execute(TEXTS, (job_id, ids))
    cur.fetchall()


def _window() -> datetime:
    now = int(time.time())
    return datetime.fromtimestamp(now - now % 60, UTC)


SQL: dict[str, Callable[[Any, str], None]] = {"batch-status": _sql_status, "batch-results": _sql_results}


def sql_loop(conn: Any, endpoint: str, job_id: str, seconds: float) -> float:
    """Requests' worth of SQL per second, one connection, autocommit (one transaction per statement)."""
    run = SQL[endpoint]
    conn.autocommit = True
    done = 0
    with conn.cursor() as cur:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            run(cur, job_id)
            done += 1
        elapsed = time.perf_counter() - started
    return done / elapsed


def bare_server(body: Path) -> Any:
    """Context manager: the bare Starlette app serving `body`; yields its base URL."""
    return procs.python_server("bench.bare_app", str(body))


def connect() -> Any:
    """A psycopg2 connection for the SQL floor."""
    return floor.connect()


def run(ctx: Context) -> list[Row]:
    """Submit a small job, wait for it, then load both endpoints next to their floors, run by run."""
    s = ctx.settings
    body = payload.submission(ctx.key, payload.lots(s.poll_lots, 1, ctx.images), s.languages)
    _, accepted = intake.submit(ctx.http, body)
    job_id = accepted["job_id"]
    pipeline.wait_done(ctx.http, ctx.key, job_id, s.pipeline_timeout_s)
    ctx.wait_idle()
    headers = job_headers(ctx.key, job_id)
    # What the generator itself can do against the bench's raw asyncio server (its ceiling).
    ceiling = procs.load(
        [f"{ctx.images}/ceiling.png"], {}, s.poll_connections, s.poll_requests, s.poll_seconds
    )[0]
    ctx.log(f"load generator ceiling: {ceiling['rps']:.0f} req/s against the raw asyncio server")
    rows: list[Row] = []
    for name, url in endpoints(job_id).items():
        saved = saved_body(url, headers)
        got: dict[str, list[float]] = {}
        statuses: list[dict[str, int]] = []
        with bare_server(saved) as base:
            for number in range(1, s.runs + 1):
                # One generator process: the floor first, then the gateway, same headers.
                bare, real = procs.load(
                    [f"{base}/bare", url], headers, s.poll_connections, s.poll_requests, s.poll_seconds
                )
                sql = sql_loop(ctx.conn, name, job_id, s.sql_loop_seconds)
                for key, value in (
                    ("rps", real["rps"]),
                    ("bare_rps", bare["rps"]),
                    ("sql_rps", sql),
                    ("p50", real["p50_ms"]),
                    ("bare_p50", bare["p50_ms"]),
                    ("p99", real["p99_ms"]),
                    ("bare_p99", bare["p99_ms"]),
                ):
                    got.setdefault(key, []).append(value)
                statuses.append(real["statuses"])
                ctx.log(
                    f"{name} run {number}: {real['rps']:.0f} req/s p99 {real['p99_ms']:.0f} ms "
                    f"(bare {bare['rps']:.0f} req/s, SQL loop {sql:.0f}/s) statuses {real['statuses']}"
                )
        saved.unlink(missing_ok=True)
        what = f"{name} ({s.poll_lots}-lot job)"
        extra = {
            "gateway_statuses": statuses,
            "connections": s.poll_connections,
            "generator_ceiling_rps": ceiling["rps"],
        }
        rows += [
            Row(
                "3 polling",
                f"{what} req/s vs bare Starlette",
                "req/s",
                got["rps"],
                got["bare_rps"],
                higher_is_better=True,
                notes=f"load generator ceiling {ceiling['rps']:.0f} req/s",
                extra=extra,
            ),
            Row(
                "3 polling",
                f"{what} req/s vs SQL loop",
                "req/s",
                got["rps"],
                got["sql_rps"],
                higher_is_better=True,
                notes="floor = the request's SQL on 1 connection, in a loop",
            ),
            Row(
                "3 polling", f"{what} p50", "ms", got["p50"], got["bare_p50"], notes="floor = bare Starlette"
            ),
            Row(
                "3 polling", f"{what} p99", "ms", got["p99"], got["bare_p99"], notes="floor = bare Starlette"
            ),
        ]
    return rows
