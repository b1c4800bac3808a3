"""Process wiring shared by the services: signals, the operations endpoint, worker threads."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from sqlalchemy import Engine, text

from lotlens_common.logs import setup_logging
from lotlens_common.ops import Readiness, serve_ops
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.stopping import catch_stop_signals

__all__ = ["flush_at_exit", "run_workers", "serve_operations", "setup_logging", "stop_on_signals"]

log = logging.getLogger(__name__)

# The last wait for Kafka's acknowledgements as a process stops: by then a broker that has not
# answered is down, and waiting longer only spends the pod's grace period.
FINAL_FLUSH_S = 10.0


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for graceful shutdown (also by one received during
    start-up, before this call: `stopping`)."""
    return catch_stop_signals()


def serve_operations(settings: ServiceSettings, port: int, engine: Engine,
                     producer: EventProducer) -> ThreadingHTTPServer | None:
    """Serve /metrics, /livez and /readyz (PostgreSQL and the brokers) on `metrics_host`:port; the
    server (None for port 0), for a caller that stops it."""

    def database() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    return serve_ops(port, settings.metrics_host, Readiness({"database": database, "kafka": producer.ping}))


def run_workers(workers: dict[str, Callable[[threading.Event], None]], stop: threading.Event) -> None:
    """Run each worker in its own thread until `stop`; if one dies the process stops (and restarts)."""
    failed: list[str] = []

    def _guard(name: str, work: Callable[[threading.Event], None]) -> None:
        try:
            work(stop)
        except Exception:
            logging.getLogger(name).exception("worker %s died", name)
            failed.append(name)
            stop.set()

    threads = [threading.Thread(target=_guard, args=(n, w), name=n, daemon=True)
               for n, w in workers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failed:
        raise SystemExit(f"workers failed: {', '.join(failed)}")


def flush_at_exit(producer: EventProducer, kept: str, timeout_s: float = FINAL_FLUSH_S) -> None:
    """Wait up to `timeout_s` for Kafka to acknowledge what `producer` sent. What it did not is one
    warning naming where it is `kept` for the next process, not an error: raised, it skipped the
    rest of the shutdown (the other producers' flushes, the pools' closing) and exited 1 with a
    traceback."""
    # `settle`, not `flush`: a flush waits on while Kafka keeps acknowledging, past a pod's grace.
    unacknowledged = producer.settle(timeout_s)
    if unacknowledged:
        log.warning("stopping with events unacknowledged by Kafka (%d; %s)", unacknowledged, kept)
