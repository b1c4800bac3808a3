"""`python -m lotlens_gateway`: serve the REST API (wiring only)."""

from __future__ import annotations

from lotlens_common.gc_tuning import tune_gc
from lotlens_common.stopping import catch_stop_signals

# First, whatever the entry point (`python -m` or the console script, which imports this module):
# a SIGTERM during the start-up below stops it cleanly (stopping.py), and the collector's
# thresholds are the service's during the imports too (gc_tuning.py).
catch_stop_signals()
tune_gc()

import logging
import threading

import uvicorn

from lotlens_common import lookups, tracing
from lotlens_common.model import languages
from lotlens_common.model.openai_client import openai_client_for
from lotlens_common.producer import EventProducer
from lotlens_common.service import flush_at_exit, setup_logging
from lotlens_gateway.admin_process import kafka_admin
from lotlens_gateway.app import create_app
from lotlens_gateway.bootstrap import build_deps, gateway_engine, images_client
from lotlens_gateway.config import GatewaySettings
from lotlens_gateway.connections import server_config
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.shutdown import FLUSH_S, CutNotice, DrainingServer

log = logging.getLogger("lotlens_gateway")


def main() -> None:
    """Connect, build the app and serve until SIGTERM."""
    settings = GatewaySettings()
    setup_logging(settings.log_level)
    logging.getLogger("uvicorn.error").addFilter(CutNotice())
    tracing.setup("gateway")
    languages.preload()
    lookups.configure(settings.dns_lookup_threads, settings.dns_lookups_per_client)
    engine = gateway_engine(settings)
    # Polling reads run on their own autocommit pool.
    read_engine = gateway_engine(settings, autocommit=True)
    producer = EventProducer(settings.kafka, "lotlens-gateway")
    images_http = images_client(settings)
    model_client = openai_client_for(settings.openai)
    deps = build_deps(settings, engine, producer, kafka_admin(settings.kafka), images_http, model_client,
                      metrics=GatewayMetrics(process=True), read_engine=read_engine)
    app = create_app(deps)
    deps.relay.start()
    # uvicorn catches SIGTERM only while it runs, then restores the handler it found and raises the
    # signal again: Python's default handler killed the process there (exit -15), before the relay
    # stopped, the producer flushed and the pools closed. Ours only sets STOP. A stop asked during
    # start-up (STOP set before uvicorn caught the signal) skips serving, or ends it at its first tick.
    stop = catch_stop_signals()
    # uvicorn waits for the longest request allowed to finish (a synchronous lot being described);
    # the others are cut when `shutdown_drain_s` is over (shutdown.py, `InFlight`).
    config = server_config(app, settings, log_config=None,
                           timeout_graceful_shutdown=settings.longest_drain_s())
    server = DrainingServer(config, deps.in_flight, settings.shutdown_drain_s)
    threading.Thread(target=_exit_on, args=(stop, server), name="stop-watch", daemon=True).start()
    try:
        if stop.is_set():
            log.info("asked to stop during start-up: not serving")
        else:
            server.run()
    finally:
        deps.relay.stop(settings.shutdown_relay_s)
        flush_at_exit(producer, "the outbox keeps them: the next process publishes them", FLUSH_S)
        engine.dispose()
        read_engine.dispose()


def _exit_on(stop: threading.Event, server: uvicorn.Server) -> None:
    stop.wait()
    server.should_exit = True


if __name__ == "__main__":
    main()
