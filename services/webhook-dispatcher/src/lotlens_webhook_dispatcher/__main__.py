"""`python -m lotlens_webhook_dispatcher`: deliver signed webhooks for completed jobs."""

from __future__ import annotations

from lotlens_common.gc_tuning import tune_gc
from lotlens_common.stopping import catch_stop_signals

# First, whatever the entry point (`python -m` or the console script, which imports this module):
# a SIGTERM during the start-up below stops it cleanly (stopping.py), and the collector's
# thresholds are the service's during the imports too (gc_tuning.py).
catch_stop_signals()
tune_gc()

from functools import partial

from lotlens_common import tracing
from lotlens_common.db import make_engine
from lotlens_common.producer import EventProducer
from lotlens_common.service import (
    flush_at_exit,
    run_workers,
    serve_operations,
    setup_logging,
    stop_on_signals,
)
from lotlens_webhook_dispatcher.bootstrap import http_transport, workers
from lotlens_webhook_dispatcher.config import DispatcherSettings


def main() -> None:
    """Run the JobCompleted consumer and the delivery loop until SIGTERM."""
    settings = DispatcherSettings()
    setup_logging(settings.log_level)
    tracing.setup("webhook-dispatcher")
    stop = stop_on_signals()
    # Attempt threads read payloads at once; past 20 they wait for a connection instead.
    pool_size = max(settings.database.pool_size, min(settings.webhook_concurrency, 20))
    engine = make_engine(settings.database, "webhook-dispatcher", pool_size,
                         limits=settings.database.worker_limits())
    consumer_producer = EventProducer(settings.kafka, "lotlens-webhook-dispatcher-consumer")
    dispatch_producer = EventProducer(settings.kafka, "lotlens-webhook-dispatcher")
    serve_operations(settings, settings.metrics_port, engine, dispatch_producer)
    try:
        run_workers(workers(settings, engine, partial(http_transport, settings), consumer_producer,
                            dispatch_producer), stop)
    finally:
        # The recorder has tried (and logged) already; an attempt whose events Kafka did not
        # acknowledge is left marked on its row, recorded as interrupted by the next instance.
        flush_at_exit(dispatch_producer, "their attempts' rows keep them for the next instance")
        flush_at_exit(consumer_producer, "the messages they were for are read again")
        engine.dispose()


if __name__ == "__main__":
    main()
