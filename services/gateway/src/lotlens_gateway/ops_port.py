"""The gateway's operations listener: `/metrics`, the detailed `/health`, `/livez` and `/readyz`
on `metrics_host`:`metrics_port`, served by `lotlens_common.ops` as every consumer's is.

They were once on the API port, unsigned: anyone reaching the API read the business volume,
per-route counts, the outbox backlog and the process's memory, the consumer groups' names and
whether the service's OpenAI key was refused. The API port keeps the contract's `GET /health`
alone, with the contract's fields (`routes_ops.py`).

The listener runs in a thread while the app runs (its lifespan); every check runs on the app's
event loop, through the same shared checks as before (one database ping or Kafka probe in flight
for all callers), and a loop that stops going round stops beating: `/livez` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from lotlens_common.clock import iso
from lotlens_common.ops import Heartbeats, Readiness, serve_ops
from lotlens_gateway.deps import GatewayDeps
from lotlens_gateway.relay import Relay

log = logging.getLogger(__name__)
T = TypeVar("T")
SERVICE = "lotlens-gateway"
# The event loop beats this often; `/livez` fails once a beat is this late (the kubelet restarts
# after four failed probes, 15 s apart). It answered `/livez` itself before, within the probe's 5 s.
BEAT_S, LOOP_STALE_S = 1.0, 10.0
# How long a check waits for the loop's answer (the database ping gives up after 3 s of its own).
CHECK_WAIT_S = 10.0


def _version() -> str:
    try:
        return version(SERVICE)
    except PackageNotFoundError:
        return "0.0.0"


async def _database_ok(deps: GatewayDeps) -> bool:
    try:
        await deps.database.result()
        return True
    except Exception as exc:  # any failure to run SELECT 1 means "not connected"
        log.warning("database health check failed: %s", exc)
        return False


async def health_report(deps: GatewayDeps) -> tuple[int, dict[str, Any]]:
    """The gateway's view of its dependencies: 503 when PostgreSQL or Kafka does not answer."""
    database_ok, kafka = await asyncio.gather(_database_ok(deps), deps.kafka.result())
    up = database_ok and kafka.connected
    workers = "running" if kafka.workers_running else ("degraded" if kafka.connected else "unknown")
    body: dict[str, Any] = {
        "status": ("healthy" if workers == "running" else "degraded") if up else "unhealthy",
        "service": SERVICE,
        "timestamp": iso(deps.clock()),
        "version": _version(),
        "database": "connected" if database_ok else "disconnected",
        "kafka": "connected" if kafka.connected else "disconnected",
        "background_worker": workers,
        "consumer_groups": {name: {"state": group.state, "members": group.members}
                            for name, group in kafka.groups.items()},
        "openai": deps.openai.status(),
    }
    return (200 if up else 503), body


def _on_loop(loop: asyncio.AbstractEventLoop, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on the app's loop from the listener's thread and wait for its result."""
    future = asyncio.run_coroutine_threadsafe(make(), loop)
    try:
        return future.result(CHECK_WAIT_S)
    except TimeoutError:
        future.cancel()
        raise


async def _beat(heartbeats: Heartbeats, relay: Relay) -> None:
    while True:
        heartbeats.beat("event loop")
        # A relay thread ended by a defect left this process taking jobs into the outbox that it
        # never published, its backlog gauges frozen, while `/livez` said alive.
        if not relay.died():
            heartbeats.beat("outbox relay")
        await asyncio.sleep(BEAT_S)


@contextlib.asynccontextmanager
async def ops_listener(deps: GatewayDeps) -> AsyncIterator[None]:
    """Serve the operations endpoint while the app runs (`metrics_port` 0: not at all)."""
    settings = deps.settings
    if not settings.metrics_port:
        yield
        return
    loop = asyncio.get_running_loop()

    def health() -> tuple[int, object]:
        try:
            return _on_loop(loop, lambda: health_report(deps))
        except TimeoutError:
            return 503, {"status": "unhealthy", "service": SERVICE, "error": "the event loop did not answer"}

    def taking_work() -> None:
        # After SIGTERM: requests in flight are being drained, new ones go to other replicas.
        if deps.in_flight.draining:
            raise RuntimeError("stopping: draining the requests in flight")

    heartbeats = Heartbeats()
    heartbeats.beat("event loop")
    heartbeats.beat("outbox relay")
    # Ready through a PostgreSQL (or Kafka) outage: the gateway itself answers what needs the
    # database 503 SERVICE_UNAVAILABLE with Retry-After, in the contract's format, and counts it
    # (LotLensAPIErrors). Taken out of the Service for it, every replica at once, the ingress
    # answered its own 503 (no Retry-After, not the contract's body, the contract's /health
    # unreachable) and no alert saw a request. The deep `/health` still reports the database.
    readiness = Readiness({"serving": taking_work})
    server = serve_ops(settings.metrics_port, settings.metrics_host, readiness,
                       LOOP_STALE_S, heartbeats=heartbeats, registry=deps.metrics.registry, health=health)
    beating = asyncio.create_task(_beat(heartbeats, deps.relay))
    try:
        yield
    finally:
        beating.cancel()
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()
