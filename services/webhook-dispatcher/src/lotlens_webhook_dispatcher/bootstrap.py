"""Wiring: builds the dispatcher's two workers from settings and injected resources."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx2
from sqlalchemy import Engine

from lotlens_common.kafka import ConsumerSpec, run_consumer
from lotlens_common.producer import EventProducer
from lotlens_webhook_dispatcher.config import DispatcherSettings
from lotlens_webhook_dispatcher.guard import GuardedTransport
from lotlens_webhook_dispatcher.handlers import completion_handler
from lotlens_webhook_dispatcher.worker import Dispatcher

Worker = Callable[[threading.Event], None]


def http_transport(settings: DispatcherSettings, transport: httpx2.BaseTransport | None = None
                   ) -> httpx2.BaseTransport:
    """The transport of one attempt thread's webhook calls: SSRF-guarded, kept-alive connections
    to the hosts that thread posts to (`transport` replaces it, in tests)."""
    limits = httpx2.Limits(max_connections=settings.webhook_per_host_concurrency,
                          max_keepalive_connections=settings.webhook_per_host_concurrency)
    return transport or GuardedTransport(settings.allow_loopback_urls, limits)


def workers(settings: DispatcherSettings, engine: Engine, new_transport: Callable[[], httpx2.BaseTransport],
            consumer_producer: EventProducer, dispatch_producer: EventProducer) -> dict[str, Worker]:
    """The consumer of `JobCompleted` and the due-queue loop, ready for `run_workers`.

    `new_transport` makes an attempt thread's HTTP transport (e.g. `partial(http_transport, settings)`).
    """
    dispatcher = Dispatcher(engine, dispatch_producer, new_transport, settings)
    spec = ConsumerSpec(
        group_id=settings.consumer_group,
        topics=settings.subscribed_topics(),
        handler=completion_handler(engine, settings.webhook_max_payload_bytes, on_scheduled=dispatcher.wake),
    )

    def consume(stop: threading.Event) -> None:
        run_consumer(settings.kafka, settings.topics, spec, consumer_producer, stop)

    return {"completions": consume, "deliveries": dispatcher.run}
