"""`python -m lotlens_gateway`: serve the REST API (wiring only)."""

from __future__ import annotations

import logging
import signal
from functools import partial

import uvicorn

from lotlens_common import lookups, tracing
from lotlens_common.db import make_engine
from lotlens_common.model import languages
from lotlens_common.model.openai_client import make_openai_client
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.service import setup_logging, tune_gc
from lotlens_common.urls import guarded_async_client
from lotlens_gateway.app import create_app
from lotlens_gateway.bootstrap import build_deps
from lotlens_gateway.config import GatewaySettings
from lotlens_gateway.connections import server_config
from lotlens_gateway.health import admin_client
from lotlens_gateway.metrics import GatewayMetrics

log = logging.getLogger("lotlens_gateway")

# anyio's default limit on threads running blocking calls for Starlette.
THREADPOOL_SIZE = 40
# After SIGTERM: requests in flight get this long, then the relay stops and the producer flushes,
# each within its own bound. The pod's terminationGracePeriodSeconds must hold all three after its
# preStop pause, or the kubelet's SIGKILL cuts them (nothing is lost: the outbox keeps unpublished
# events, but clients see resets). Synchronous lots may take longer than the drain: a client
# retries them with its Idempotency-Key.
DRAIN_S, RELAY_STOP_S, FLUSH_S = 30, 10, 10
SHUTDOWN_S = DRAIN_S + RELAY_STOP_S + FLUSH_S


def main() -> None:
    """Connect, build the app and serve until SIGTERM."""
    settings = GatewaySettings()
    setup_logging(settings.log_level)
    tracing.setup("gateway")
    tune_gc()
    languages.preload()
    lookups.configure(settings.dns_lookup_threads, settings.dns_lookups_per_client)
    # Routes run their queries on Starlette's thread pool (40 threads): a pool smaller than that
    # makes requests wait for connections and closes and reopens the overflow ones.
    pool_size = max(settings.database.pool_size, THREADPOOL_SIZE)
    timeout = settings.database_connect_timeout_s
    engine = make_engine(settings.database, "gateway", pool_size, connect_timeout_s=timeout)
    # Polling reads run on their own autocommit pool; both pools open connections only on demand.
    read_engine = make_engine(settings.database, "gateway", pool_size, autocommit=True,
                              connect_timeout_s=timeout)
    producer = EventProducer(settings.kafka, "lotlens-gateway")
    images_http = guarded_async_client(settings.allow_loopback_urls, settings.image_check_timeout_s)
    model = settings.openai
    model_client = make_openai_client(model.api_key, model.base_url, model.timeout_s)
    deps = build_deps(settings, engine, producer, partial(admin_client, settings.kafka), images_http,
                      model_client,
                      metrics=GatewayMetrics(process=True), read_engine=read_engine)
    app = create_app(deps)
    deps.relay.start()
    # uvicorn restores the handler it found and raises the SIGTERM again once it has drained: with
    # Python's default handler that killed the process there, before the relay stopped, the
    # producer flushed and the pools closed (exit -15). A handler that does nothing lets main end.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.Server(server_config(app, settings, log_config=None, timeout_graceful_shutdown=DRAIN_S)).run()
    finally:
        deps.relay.stop(RELAY_STOP_S)
        try:
            producer.flush(FLUSH_S)
        except PublishError as exc:  # the outbox keeps what was not acknowledged: the next process sends it
            log.warning("stopping with events unacknowledged by Kafka: %s", exc)
        engine.dispose()
        read_engine.dispose()


if __name__ == "__main__":
    main()
