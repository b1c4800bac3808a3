"""Wiring: builds the dispatcher's two workers from settings and injected resources."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from lotlens_common.kafka import ConsumerSpec, EventProducer, run_consumer
from lotlens_webhook_dispatcher.config import DispatcherSettings
from lotlens_webhook_dispatcher.guard import GuardedTransport
from lotlens_webhook_dispatcher.handlers import completion_handler
from lotlens_webhook_dispatcher.worker import Dispatcher

Worker = Callable[[threading.Event], None]


def http_client(settings: DispatcherSettings, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """A client for one attempt thread's webhook calls: SSRF-guarded, no redirects, kept-alive
    connections to the hosts that thread posts to."""
    limits = httpx.Limits(max_connections=settings.webhook_per_host_concurrency,
                          max_keepalive_connections=settings.webhook_per_host_concurrency)
    return httpx.Client(transport=transport or GuardedTransport(settings.allow_loopback_urls, limits),
                        follow_redirects=False, trust_env=False)


def workers(settings: DispatcherSettings, engine: Engine, new_client: Callable[[], httpx.Client],
            consumer_producer: EventProducer, dispatch_producer: EventProducer) -> dict[str, Worker]:
    """The consumer of `JobCompleted` and the due-queue loop, ready for `run_workers`.

    `new_client` makes an attempt thread's HTTP client (e.g. `partial(http_client, settings)`).
    """
    dispatcher = Dispatcher(engine, dispatch_producer, new_client, settings)
    spec = ConsumerSpec(
        group_id=settings.consumer_group,
        topics=[settings.topics.completions],
        handler=completion_handler(engine, settings.webhook_max_payload_bytes, on_scheduled=dispatcher.wake),
        transient=(OperationalError, InterfaceError),
    )

    def consume(stop: threading.Event) -> None:
        run_consumer(settings.kafka, settings.topics, spec, consumer_producer, stop)

    return {"completions": consume, "deliveries": dispatcher.run}
