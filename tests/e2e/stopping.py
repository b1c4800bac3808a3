"""What the tests of a gateway stopped or killed with work in hand share (no tests here): the
gateway alone as a process, requests sent in the background, its signals and its log, and what
PostgreSQL holds of its requests."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx2
from sqlalchemy import Connection, Engine, select

from lotlens_common.events import JobSubmitted
from lotlens_common.settings import TopicSettings
from lotlens_common.signing import sign
from lotlens_common.tables import idempotency_keys, outbox
from tests.conftest import Infra
from tests.e2e.harness import Stack
from tests.integration.lock_waits import waiting_on_a_lock
from tests.polling import wait_for
from tests.servers import serve
from tests.stack_health import wait_healthy

# The drain the tests give their gateway (LOTLENS_SHUTDOWN_DRAIN_S).
DRAIN_S = 1.0
# Generous: a loaded machine; the point is that it ends, with 0.
EXIT_WITHIN_S = 60
# What the gateway logs when its drain is over and it cuts what is still running (shutdown.py).
DRAIN_OVER = "the shutdown's drain of"


@contextmanager
def lone_gateway(infra: Infra, engine: Engine, topics: TopicSettings, logs: Path,
                 **env: str) -> Iterator[Stack]:
    """The gateway alone (the pipeline services play no part), on the test's schema and topics,
    draining requests for `DRAIN_S`; `env` adds settings."""
    running = Stack(infra=infra, topics=topics, logs=logs,
                    database_url=engine.url.render_as_string(hide_password=False),
                    extra_env={"LOTLENS_SHUTDOWN_DRAIN_S": str(DRAIN_S), **env})
    try:
        running.start("gateway")
        wait_healthy(running.url, running.processes, running.log_tail)
        yield running
    finally:
        running.down()


def body(gw: Stack, lots: list[dict[str, Any]]) -> dict[str, Any]:
    """A submission of `lots` signed with the stack's client key."""
    signature = sign(gw.client_key, json.dumps(lots, separators=(",", ":"), sort_keys=True).encode())
    return {"signature": signature, "languages": ["en"], "lots": lots}


def in_background(post: Any) -> tuple[threading.Thread, list[Any]]:
    """Run `post()` in a thread; its answer (or the exception) lands in the list."""
    answers: list[Any] = []

    def run() -> None:
        try:
            answers.append(post())
        except httpx2.HTTPError as exc:
            answers.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, answers


def sigterm(gw: Stack, sig: int = signal.SIGTERM) -> tuple[subprocess.Popen[bytes], int]:
    """SIGTERM (or `sig`) to the gateway; its process and where its log stood."""
    written = (gw.logs / "gateway.log").stat().st_size
    process = gw.processes.pop("gateway")
    process.send_signal(sig)
    return process, written


def wait_for_line(gw: Stack, since: int, needle: str, process: subprocess.Popen[bytes]) -> None:
    """Wait until the gateway logs `needle` (after `since`), failing if it exits first."""
    def logged() -> bool:
        if needle in log_since(gw, since):
            return True
        assert process.poll() is None, f"exited before logging {needle!r}: {gw.log_tail('gateway')}"
        return False

    wait_for(logged, lambda: f"the gateway to log {needle!r}: {gw.log_tail('gateway')}",
             timeout_s=EXIT_WITHIN_S)


def log_since(gw: Stack, since: int) -> str:
    """The gateway's log from byte `since` on."""
    return (gw.logs / "gateway.log").read_bytes()[since:].decode(errors="replace")


def records(text_: str) -> list[dict[str, Any]]:
    """The JSON records of a log."""
    return [json.loads(line) for line in text_.splitlines() if line.startswith("{")]


def errors_in(logged: list[dict[str, Any]]) -> list[str]:
    """The messages logged as errors or with a traceback."""
    return [r["msg"] for r in logged if "exc" in r or r["level"] in ("ERROR", "CRITICAL")]


@contextmanager
def stuck_image_host(release: threading.Event | None = None) -> Iterator[tuple[str, threading.Event]]:
    """Answers every image request (404) only once `release` is set, or the test is over; the
    event is set at the first request."""
    asked, over = threading.Event(), release or threading.Event()

    class Stuck(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            asked.set()
            over.wait(EXIT_WITHIN_S)
            self.send_response(404)
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *_args: object) -> None:
            """Say nothing."""

    try:
        with serve(Stuck) as url:
            yield url, asked
    finally:
        over.set()


def jobs_of(conn: Connection, client_id: str) -> list[str]:
    """The jobs written to the outbox for the client."""
    return list(conn.scalars(select(outbox.c.job_id).where(
        outbox.c.client_id == client_id, outbox.c.event_type == JobSubmitted.event_type)))


def job_of(answer: httpx2.Response) -> str | None:
    """The job an answer names (its text when it names none)."""
    return str(answer.json()["job_id"]) if answer.status_code in (200, 201) else answer.text


def wait_until_waiting(engine: Engine, query: str, answers: list[Any]) -> None:
    """Wait until a statement starting with `query` waits on a lock."""
    wait_for(lambda: waiting_on_a_lock(engine, query), lambda: f"{query!r} to wait on the lock: {answers}")


def restarted(gateway: Stack, **env: str) -> None:
    """The gateway started again (as another replica would take the retry), healthy."""
    gateway.start("gateway", **env)
    wait_healthy(gateway.url, gateway.processes, gateway.log_tail)


def retried_after_restart(gateway: Stack, submission: dict[str, Any], key: dict[str, str]) -> httpx2.Response:
    """The gateway started again and the submission sent again."""
    restarted(gateway)
    return httpx2.post(f"{gateway.url}/api/v1/generate-descriptions", json=submission, headers=key,
                       timeout=30)


def key_rows(engine: Engine, client_id: str, key: str) -> list[tuple[Any, ...]]:
    """The client's rows of an Idempotency-Key: (key, status code)."""
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(
            idempotency_keys.c.key, idempotency_keys.c.status_code).where(
            idempotency_keys.c.client_id == client_id, idempotency_keys.c.key == key))]
