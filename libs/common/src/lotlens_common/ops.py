"""The operations endpoint of a service: `/metrics`, `/livez` and `/readyz` on a port of its own.

Every service serves it apart from anything a client reaches (the gateway's API port included):
what it says (volumes, backlogs, dependencies' state) is for Prometheus, the kubelet and operators.

`/livez` answers from memory only: every loop that registered a heartbeat has beaten within
`stale_after_s` (a loop retrying a transient failure still beats), and none has ended for good
(`loop_ended`: a thread whose loop an unexpected error ended). A dependency outage must not
make the kubelet restart the process, so no dependency is asked. `/readyz` asks the dependencies
(PostgreSQL, the Kafka brokers), cached for a couple of seconds so a probe storm stays cheap.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

# A loop may legitimately spend long in one step (a 200 MB batch upload, a big consumer batch);
# Kafka itself gives a consumer 11 minutes between polls (max.poll.interval.ms), and the consumer
# loop beats before each handler call (one statement_timeout, 300 s, at most when a query is slow).
STALE_AFTER_S = 600.0
READY_CACHE_S = 2.0

Check = Callable[[], None]  # raises when the dependency does not answer
# A deeper report than readiness (the gateway's `/health`): its HTTP status and JSON body.
Report = Callable[[], tuple[int, object]]


class Heartbeats:
    """When each named loop of this process last went round."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._ended: set[str] = set()
        self._lock = threading.Lock()

    def beat(self, loop: str) -> None:
        """Record that `loop` is going round."""
        now = self._clock()
        with self._lock:
            self._last[loop] = now

    def end(self, loop: str) -> None:
        """Record that `loop` will not go round again (its thread ended): stale at once."""
        with self._lock:
            self._ended.add(loop)

    def now(self) -> float:
        """The time on the clock beats are recorded with."""
        return self._clock()

    def stale(self, stale_after_s: float) -> dict[str, float]:
        """Loops whose last beat is older than `stale_after_s`, or that ended, with their age."""
        now = self._clock()
        with self._lock:
            ages = {loop: now - last for loop, last in self._last.items()}
            ended = set(self._ended)
        return {loop: age for loop, age in ages.items() if age > stale_after_s or loop in ended}


HEARTBEATS = Heartbeats()


def heartbeat(loop: str) -> None:
    """Record a turn of this process's loop `loop` (what `/livez` looks at)."""
    HEARTBEATS.beat(loop)


def liveness_clock() -> float:
    """The time on the clock `/livez` measures heartbeats' ages with."""
    return HEARTBEATS.now()


def loop_ended(loop: str) -> None:
    """Record that this process's loop `loop` ended while the process goes on: `/livez` fails
    now (the kubelet restarts the process), not `STALE_AFTER_S` later."""
    HEARTBEATS.beat(loop)  # listed even if it never beat
    HEARTBEATS.end(loop)


class Readiness:
    """Named dependency checks, run at most every `cache_s` seconds."""

    def __init__(self, checks: Mapping[str, Check], cache_s: float = READY_CACHE_S) -> None:
        self._checks = dict(checks)
        self._cache_s = cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, str]] | None = None

    def report(self) -> dict[str, str]:
        """`ok` or the error of each dependency."""
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self._cache_s:
                return self._cached[1]
            result: dict[str, str] = {}
            for name, check in self._checks.items():
                try:
                    check()
                    result[name] = "ok"
                except Exception as exc:  # any failure means "not ready"; the reason is shown
                    log.warning("readiness: %s: %s", name, exc)
                    result[name] = f"{type(exc).__name__}: {exc}"[:300]
            self._cached = (time.monotonic(), result)
            return result


# How often the serving loop looks whether `shutdown()` was called: the default 0.5 s added up to
# half a second to every stop of every process (and every test gateway's teardown).
SHUTDOWN_POLL_S = 0.05


def serve_ops(port: int, host: str, readiness: Readiness, stale_after_s: float = STALE_AFTER_S, *,
              heartbeats: Heartbeats = HEARTBEATS, registry: CollectorRegistry = REGISTRY,
              health: Report | None = None) -> ThreadingHTTPServer | None:
    """Serve `/metrics` (of `registry`), `/livez` (of `heartbeats`), `/readyz` and, given `health`,
    `/health` on host:port in a daemon thread (port 0: not served)."""
    if not port:
        return None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/livez":
                stale = heartbeats.stale(stale_after_s)
                self._json(503 if stale else 200, {"status": "stalled" if stale else "alive",
                                                   "stale_loops": stale})
            elif path == "/readyz":
                report = readiness.report()
                ready = all(value == "ok" for value in report.values())
                self._json(200 if ready else 503, {"status": "ready" if ready else "not ready",
                                                   "checks": report})
            elif path == "/health" and health is not None:
                self._json(*health())
            else:
                self._json(404, {"error": "Not found"})

        def _json(self, status: int, body: object) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                # The prober gave up first (its timeout): nothing to answer, and not worth the
                # server's traceback on stderr.
                log.info("ops %s: the client left before its answer", self.path)

        def log_message(self, format: str, *args: object) -> None:
            """Probes every few seconds are not worth a log line."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(SHUTDOWN_POLL_S,), name="ops-http",
                     daemon=True).start()
    return server
