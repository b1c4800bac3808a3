"""`lotlens-result-store`: wiring only."""

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
from functools import partial

from lotlens_common import tracing
from lotlens_common.db import make_engine
from lotlens_common.kafka import ConsumerSpec, run_consumer
from lotlens_common.producer import EventProducer
from lotlens_common.service import serve_operations, setup_logging, stop_on_signals
from lotlens_result_store.config import ResultStoreSettings
from lotlens_result_store.handlers import handle
from lotlens_result_store.sweeps import sweep, watch_swaps

__all__ = ["main"]
log = logging.getLogger("lotlens_result_store")


def main() -> None:
    """Project every event onto the read models until SIGTERM."""
    settings = ResultStoreSettings()
    setup_logging(settings.log_level)
    tracing.setup("result-store")
    stop = stop_on_signals()
    engine = make_engine(settings.database, "result-store", limits=settings.database.worker_limits())
    producer = EventProducer(settings.kafka, "result-store")
    serve_operations(settings, settings.metrics_port, engine, producer)
    topics = settings.topics
    try:
        # A crash after a commit but before JobCompleted was acknowledged leaves a terminal job
        # unannounced; no further event may come for it, so look for such jobs at every start.
        swept = sweep(engine, producer, topics.completions, stop)
        if swept.announced:
            log.info("announced %d jobs left unannounced by a previous run", swept.announced)
        # A rebuild's swap brings in jobs it finished, which no event will touch again. The watch
        # has a producer of its own: one producer is one thread's (a failed flush discards what
        # is queued, another thread's JobCompleted too, which that thread then marked announced).
        threading.Thread(target=watch_swaps, name="swap-watch", daemon=True, args=(
            engine, EventProducer(settings.kafka, "result-store"), topics.completions, stop,
            settings.swap_check_s, swept.tables)).start()
        consumer = ConsumerSpec(
            group_id=settings.group_id,
            topics=settings.subscribed_topics(),
            handler=partial(handle, engine, producer, topics.completions))
        run_consumer(settings.kafka, topics, consumer, producer, stop)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
