"""Building the gateway's collaborators from settings and the clients `__main__` opened."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial

import httpx2
import openai
from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError

from lotlens_common.clock import utc_now
from lotlens_common.db import make_engine
from lotlens_common.producer import EventProducer
from lotlens_common.shares import Shares
from lotlens_common.urls import Resolver, guarded_async_client, resolve_host
from lotlens_gateway.admin_process import AdminProcess
from lotlens_gateway.config import GatewaySettings
from lotlens_gateway.deps import GatewayDeps
from lotlens_gateway.downloads import download_slots
from lotlens_gateway.group_lag import GroupLagCollector
from lotlens_gateway.health import KafkaProbe
from lotlens_gateway.idempotency import IdempotencyStore
from lotlens_gateway.intake_slots import IntakeSlots
from lotlens_gateway.job_store import JobStore
from lotlens_gateway.metrics import ADMIN_READS, GatewayMetrics
from lotlens_gateway.openai_probe import OpenAIProbe
from lotlens_gateway.outbox import Outbox
from lotlens_gateway.ratelimit import RateLimiter
from lotlens_gateway.relay import Relay
from lotlens_gateway.shared_check import SharedCheck
from lotlens_gateway.strikes import AddressStrikes
from lotlens_gateway.sync_mode import ImagePolicy, SyncDescriber
from lotlens_gateway.sync_slots import sync_slots

log = logging.getLogger(__name__)
# anyio's default limit on threads running blocking calls for Starlette.
THREADPOOL_SIZE = 40
# A probe waits this long for PostgreSQL's answer. A ping still blocked then goes on (a hung
# connection can block for minutes) and the next probe starts another, two at most at once.
DATABASE_PING_TIMEOUT_S, DATABASE_PING_THREADS = 3.0, 2


def gateway_engine(settings: GatewaySettings, autocommit: bool = False, name: str = "gateway") -> Engine:
    """An engine of the gateway's (`autocommit` for the polling reads): a connection per worker
    thread, and a client waiting behind each statement, so a database that does not answer, a
    lock that is not granted and a statement that does not end are a 503 in seconds
    (`LOTLENS_DATABASE_CONNECT_TIMEOUT_S`, `DatabaseSettings.request_limits`)."""
    # Routes run their queries on Starlette's thread pool: a pool smaller than it makes requests
    # wait for connections and closes and reopens the overflow ones. Connections open on demand.
    pool_size = max(settings.database.pool_size, THREADPOOL_SIZE)
    return make_engine(settings.database, name, pool_size, autocommit=autocommit,
                       connect_timeout_s=settings.database_connect_timeout_s,
                       limits=settings.database.request_limits())


def _one_database(*engines: Engine) -> None:
    """A lost connection on one of the engines drops the others' pools too.

    SQLAlchemy drops only the pool whose connection failed. After a failover (or an operator's
    `pg_terminate_backend`) each of the gateway's pools held dead sessions, and a status read, which
    uses both (its rate limit, then its read), was a 503 once per pool: two in a row to the same
    client, where one request is enough to learn the database went away."""
    def drop_the_others(failed: Engine, context: ExceptionContext) -> None:
        if context.is_disconnect:
            for other in engines:
                if other is not failed:
                    # Closed now, not left open until garbage collection: a single session ended
                    # (an idle timeout, one `pg_terminate_backend`) costs the others a reconnect only.
                    other.dispose()

    for engine in engines:
        event.listen(engine, "handle_error", partial(drop_the_others, engine))


def _make_missing_secrets(relay: Relay) -> None:
    """Every client can verify webhooks the Standard Webhooks way from its first job on.

    A database that is down does not keep the gateway from starting (health reports it); the
    secrets are then made by the relay's minute-ly prune once it is back (`Relay.prune`).
    """
    try:
        relay.make_missing_secrets()
    except DBAPIError as exc:
        log.warning("clients' webhook secrets not checked, the database is unreachable: %s", exc)


def images_client(settings: GatewaySettings, resolve: Resolver = resolve_host) -> httpx2.AsyncClient:
    """The image checks' guarded HTTP client, with as many connections as `build_deps` gives places."""
    return guarded_async_client(settings.allow_loopback_urls, settings.image_check_timeout_s,
                                settings.image_check_connections, resolve)


def build_deps(settings: GatewaySettings, engine: Engine, producer: EventProducer,
               new_admin: Callable[[], object],
               images_http: httpx2.AsyncClient, model_client: openai.AsyncOpenAI,
               metrics: GatewayMetrics | None = None,
               clock: Callable[[], datetime] = utc_now, read_engine: Engine | None = None,
               resolve: Resolver = resolve_host) -> GatewayDeps:
    """Wire the stores, limiter, outbox and its relay, probe and synchronous describer together.

    Each configured client without a `whsec_` webhook secret gets one. `read_engine`, an
    autocommit engine on the same database, serves the polling reads; `new_admin` makes the Kafka
    admin clients of the health probe and the group-lag gauges (again after a failure), each in a
    child process (`admin_process.py`: it is pickled there); `resolve` looks up image and webhook
    hosts (build `images_http` with the same one).
    """
    metrics = metrics or GatewayMetrics()
    images = ImagePolicy(allow_loopback=settings.allow_loopback_urls,
                         concurrency=settings.image_check_concurrency,
                         timeout_s=settings.image_check_timeout_s, max_bytes=settings.max_image_bytes,
                         resolve=resolve,
                         shares=Shares(settings.image_check_connections, settings.image_checks_per_client))
    outbox = Outbox(engine, metrics, settings.max_event_bytes)
    topics = (settings.topics.submissions, settings.topics.completions)
    relay = Relay(engine, producer, topics, settings.relay_settings(), metrics)
    _make_missing_secrets(relay)
    outbox.on_append(relay.wake)
    if read_engine is not None:
        _one_database(engine, read_engine)
    store = JobStore(engine, metrics, read_engine)
    admins = {reading: AdminProcess(new_admin, metrics.admin_process_restarts.labels(reading=reading).inc)
              for reading in ADMIN_READS}
    lag_admin, health_admin = admins["group_lag"], admins["health"]
    metrics.registry.register(GroupLagCollector(lag_admin, settings.group_topics(),
                                                settings.kafka.group_prefix))
    return GatewayDeps(
        settings=settings,
        store=store,
        limiter=RateLimiter(engine, settings.rate_limit, settings.rate_limit_window_s, metrics),
        idempotency=IdempotencyStore(engine, settings.idempotency_ttl_s, settings.idempotency_lease(),
                                     metrics),
        outbox=outbox,
        relay=relay,
        kafka=SharedCheck(KafkaProbe(health_admin, settings.consumer_groups, settings.kafka.group_prefix,
                                     settings.health_cache_s).health),
        admin_processes=(lag_admin, health_admin),
        database=SharedCheck(store.ping, DATABASE_PING_THREADS, DATABASE_PING_TIMEOUT_S),
        describer=SyncDescriber(model_client=model_client, http=images_http, models=settings.models,
                                images=images, timeout_s=settings.sync_timeout_s, metrics=metrics,
                                clock=clock),
        metrics=metrics,
        openai=OpenAIProbe(model_client, metrics.openai_reachable, settings.openai_check_interval_s),
        intake=IntakeSlots(settings.intake_slots, settings.max_lot_bytes, settings.intake_wait_s, metrics,
                           settings.intake_waiting),
        strikes=AddressStrikes(settings.intake_strikes_limit, settings.intake_strikes_window_s, metrics),
        downloads=download_slots(settings.download_slots, settings.download_slots_per_client, metrics),
        sync_slots=sync_slots(settings.sync_slots, settings.sync_slots_per_client, metrics),
        clock=clock,
        resolve=resolve,
    )
