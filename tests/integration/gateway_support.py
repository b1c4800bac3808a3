"""Harness of the gateway's integration tests (no tests here; the test modules import from it).

A real gateway serves on a free loopback port (uvicorn in a thread) over the test's Kafka topics
and the shared PostgreSQL, with two fresh clients, so the integrators' `requests`-based client
and shell recipes talk to it exactly as they would in production.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
import uuid
from asyncio import AbstractEventLoop
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import httpx2
import openai
import uvicorn
from confluent_kafka import Consumer
from fastapi import FastAPI
from sqlalchemy import Engine, func, insert, select, text

from lotlens_common import signing
from lotlens_common.clock import utc_now
from lotlens_common.envelope import Envelope, decode
from lotlens_common.events import JobSubmitted
from lotlens_common.producer import EventProducer
from lotlens_common.settings import DatabaseSettings, KafkaSettings, ServiceSettings
from lotlens_common.tables import descriptions, jobs, lots, outbox
from lotlens_common.urls import IPAddress, Resolver
from lotlens_gateway.admin_process import kafka_admin
from lotlens_gateway.app import create_app
from lotlens_gateway.bootstrap import build_deps, gateway_engine, images_client
from lotlens_gateway.config import GatewaySettings
from lotlens_gateway.connections import server_config
from lotlens_gateway.deps import GatewayDeps
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.shutdown import InFlight
from tests.conftest import new_id
from tests.events import read_to_end
from tests.network_guard import stub_resolver
from tests.polling import wait_for
from tests.servers import free_port

UNUSED_MODEL_URL = "http://127.0.0.1:9/v1"
# A global address (example.com's), for names judged and never connected to.
PUBLIC_ADDRESS = "93.184.215.14"


@contextmanager
def serve_app(app: FastAPI,
              gateway: GatewaySettings | None = None) -> Iterator[tuple[str, AbstractEventLoop]]:
    """Serve an ASGI app with uvicorn on a free loopback port in a thread; yields its base URL and
    the event loop it serves on.

    With `gateway` settings, the server is configured as the gateway's (its connection limits) and
    runs the app's lifespan (its operations listener).
    """
    port = free_port()
    options: dict[str, Any] = {"host": "127.0.0.1", "port": port, "log_level": "warning",
                               "lifespan": "on" if gateway else "off", "timeout_graceful_shutdown": 1}
    config = server_config(app, gateway, **options) if gateway else uvicorn.Config(app, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        return server.started

    wait_for(started, "the server to start", timeout_s=20, every_s=0.02)
    try:
        yield f"http://127.0.0.1:{port}", server.servers[0].get_loop()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class _Kept(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def errors_logged() -> Iterator[list[logging.LogRecord]]:
    """The ERROR records logged inside, the gateway's and uvicorn's: the test server's logging
    configuration (uvicorn's default) keeps uvicorn's loggers from the root one, which caplog sees."""
    records: list[logging.LogRecord] = []
    handler = _Kept(records)
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def logged_text(records: list[logging.LogRecord]) -> str:
    """The records as a log would show them, tracebacks included (for an assertion's message)."""
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    return "\n".join(formatter.format(record) for record in records)


@dataclass
class Gateway:
    """A running gateway and two clients of it (`key` is the main one, `other_key` a stranger)."""

    url: str
    deps: GatewayDeps
    settings: GatewaySettings
    client_id: str
    key: str
    other_id: str
    other_key: str
    loop: AbstractEventLoop  # what it serves on (in a thread of the test process)

    @property
    def ops_url(self) -> str:
        """The base URL of its operations listener (`/metrics`, the detailed `/health`, probes)."""
        return f"http://{self.settings.metrics_host}:{self.settings.metrics_port}"

    def sign(self, message: str | bytes, key: str | None = None) -> str:
        """`sha256=<hex>` over a message with the given (default: main) key."""
        raw = message.encode() if isinstance(message, str) else message
        return signing.sign(key or self.key, raw)

    def lots_signature(self, lot_list: Sequence[Any], key: str | None = None) -> str:
        """The contract's body signature of a `lots` array."""
        return self.sign(json.dumps(lot_list, separators=(",", ":"), sort_keys=True), key)

    def submit(self, lot_list: list[dict[str, Any]], languages: Sequence[str] = ("en",),
               key: str | None = None, headers: dict[str, str] | None = None, timeout: float = 120,
               **fields: Any) -> httpx2.Response:
        """POST a signed submission (waiting for its answer `timeout` seconds, as a client would)."""
        body = {"signature": self.lots_signature(lot_list, key), "version": "1.0.0",
                "languages": list(languages), "lots": lot_list, **fields}
        return httpx2.post(f"{self.url}/api/v1/generate-descriptions", json=body, headers=headers,
                           timeout=timeout)

    def get_job(self, path: str, job_id: str, key: str | None = None) -> httpx2.Response:
        """GET a job-addressed endpoint, header-signed over the job id."""
        signature = {"X-Signature": self.sign(job_id, key)}
        return httpx2.get(f"{self.url}{path.format(job_id=job_id)}", headers=signature, timeout=30)

    def cancel(self, job_id: str, key: str | None = None) -> httpx2.Response:
        """POST a job's cancel, header-signed over the job id."""
        return httpx2.post(f"{self.url}/api/v1/batch-jobs/{job_id}/cancel",
                           headers={"X-Signature": self.sign(job_id, key)}, timeout=30)

    def list_jobs(self, query: str = "", key: str | None = None) -> httpx2.Response:
        """GET /api/v1/batch-jobs signed over the raw query string."""
        suffix = f"?{query}" if query else ""
        signature = {"X-Signature": self.sign(query, key)}
        return httpx2.get(f"{self.url}/api/v1/batch-jobs{suffix}", headers=signature, timeout=30)


def new_key() -> str:
    """A random client key, as long as the gateway asks (config.MIN_KEY_CHARS)."""
    return f"key-{uuid.uuid4().hex}"


def gateway_settings(settings: ServiceSettings, clients: dict[str, str], **overrides: Any) -> GatewaySettings:
    """Gateway settings over the test's infrastructure and topics."""
    values: dict[str, Any] = {"kafka": settings.kafka, "database": settings.database,
                              "topics": settings.topics, "allow_loopback_urls": True, **overrides}
    return GatewaySettings(clients=clients, **values)


@contextmanager
def running_gateway(settings: ServiceSettings, engine: Engine, model_url: str = UNUSED_MODEL_URL,
                    kafka: KafkaSettings | None = None, new_admin: Callable[[], object] | None = None,
                    resolve: Resolver | None = None, client_id: str | None = None,
                    clock: Callable[[], datetime] = utc_now, client_key: str | None = None,
                    model_timeout_s: float = 30.0, **overrides: Any) -> Iterator[Gateway]:
    """A gateway on a free port, its operations listener on another; `kafka` may point at a dead
    broker, `new_admin` makes the admin clients of its admin processes (default: real ones; fakes
    in `kafka_admin_fakes.py`), `resolve` looks up image and webhook hosts (default: images, a
    stub that knows no name; webhooks, `public_webhook_hosts`), `client_id` names its first
    client (default: a new id) and `client_key` its key (default: a new one; another gateway's, a
    replica of it), `clock` is the gateway's (default: the real one), `model_timeout_s` its model
    client's timeout (`OPENAI_TIMEOUT_S`), `overrides` change settings."""
    client_id, other_id = client_id or new_id("acme-"), new_id("other-")
    key, other_key = client_key or new_key(), new_key()
    overrides.setdefault("metrics_port", free_port())
    gw_settings = gateway_settings(settings, {client_id: key, other_id: other_key},
                                   kafka=kafka or settings.kafka, **overrides)
    producer = EventProducer(gw_settings.kafka, "gateway-test")
    webhook_resolve = resolve or public_webhook_hosts
    resolve = resolve or stub_resolver({})
    images_http = images_client(gw_settings, resolve)
    model_client = openai.AsyncOpenAI(api_key="test", base_url=model_url, timeout=model_timeout_s,
                                      max_retries=0)
    # The reads' autocommit engine, as `__main__` builds it, on whatever database `engine` names.
    on_engine = DatabaseSettings(DATABASE_URL=engine.url.render_as_string(hide_password=False))
    reads = gateway_engine(gw_settings.model_copy(update={"database": on_engine}), autocommit=True,
                           name="tests")
    deps = build_deps(gw_settings, engine, producer, new_admin or kafka_admin(gw_settings.kafka),
                      images_http, model_client, clock=clock, read_engine=reads, resolve=webhook_resolve)
    deps.relay.start()
    try:
        with serve_app(create_app(deps), gw_settings) as (url, loop):
            yield Gateway(url, deps, gw_settings, client_id, key, other_id, other_key, loop)
    finally:
        deps.relay.stop(gw_settings.shutdown_relay_s)  # as `__main__` stops it
        # Then the round it cut short, waiting on a broker that is down: left running, it read the
        # outbox during the next test (whose idle relay then saw two reads in 2 s).
        assert deps.relay.join(30), "the outbox relay outlived its gateway"
        reads.dispose()


async def public_webhook_hosts(host: str, _port: int) -> list[IPAddress]:
    """Every webhook host name on one public address: the intake judges a webhook host by it and
    never connects to it (the dispatcher resolves again itself), and refuses a name that does not
    resolve. No DNS query leaves the machine."""
    return [ipaddress.ip_address(PUBLIC_ADDRESS)]


def documented(method: str, path: str, status: int) -> str:
    """What the OpenAPI document says a route's error status means (its codes)."""
    return str(openapi_document()["paths"][path][method]["responses"][str(status)]["description"])


def openapi_document() -> dict[str, Any]:
    """The gateway's OpenAPI document, built from its routes alone (nothing connects)."""
    routes_only = cast(GatewayDeps, SimpleNamespace(metrics=GatewayMetrics(), in_flight=InFlight()))
    return create_app(routes_only).openapi()


def make_lots(count: int, prefix: str | None = None, images: int = 2, webhook: str | None = None,
              image_base: str = "https://img.example.com") -> list[dict[str, Any]]:
    """Lots in the contract's shape."""
    prefix = prefix or new_id("lot-")
    made = []
    for i in range(count):
        lot: dict[str, Any] = {"lot_id": f"{prefix}-{i}", "additional_info": f"Car {i}, front collision",
                               "images": [{"url": f"{image_base}/{prefix}-{i}-{n}.jpg"}
                                          for n in range(images)]}
        if webhook:
            lot["webhook"] = webhook
        made.append(lot)
    return made


def consume(bootstrap: str, topic: str, count: int, timeout_s: float = 30.0) -> list[tuple[bytes, Envelope]]:
    """(key, envelope) of the first `count` messages of a topic (fewer if the time runs out)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": new_id("gateway-test-"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    found: list[tuple[bytes, Envelope]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < count and time.monotonic() < deadline:
            for message in consumer.consume(10_000, 0.5):
                if message.error() is None:
                    found.append((message.key() or b"", decode(message.value() or b"")))
    finally:
        consumer.close()
    return found


def insert_finished_job(engine: Engine, client_id: str, lot_list: list[dict[str, Any]],
                        languages: Sequence[str], status: str = "completed", job_id: str | None = None,
                        created_at: datetime | None = None, failed: Sequence[str] = ()) -> str:
    """Read-model rows of a finished job, as the result-store would project them; returns the job id."""
    job_id = job_id or new_id("job-")
    created = created_at or datetime.now(UTC) - timedelta(minutes=45)
    done = created + timedelta(minutes=45)
    failed_ids = set(failed)
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(
            job_id=job_id, client_id=client_id, status=status, api_version="1.0.0", languages=list(languages),
            total_lots=len(lot_list), processed_lots=len(lot_list) - len(failed_ids),
            failed_lots=len(failed_ids),
            images_processed=sum(len(lot["images"]) for lot in lot_list), webhook_configured=False,
            created_at=created, updated_at=done, estimated_completion=done,
            completed_at=done if status != "cancelled" else None,
            cancelled_at=done if status == "cancelled" else None))
        for seq, lot in enumerate(lot_list):
            is_failed = lot["lot_id"] in failed_ids
            conn.execute(insert(lots).values(
                job_id=job_id, lot_id=lot["lot_id"], seq=seq, status="failed" if is_failed else "completed",
                additional_info=lot["additional_info"], image_urls=[i["url"] for i in lot["images"]],
                processed_images=0 if is_failed else len(lot["images"]), missing_images=[],
                error_message="none of the lot's 2 images could be fetched" if is_failed else None,
                processed_at=done))
            if not is_failed:
                conn.execute(insert(descriptions), [
                    {"job_id": job_id, "lot_id": lot["lot_id"], "language": language,
                     "damages": f"<p>[{language}] {lot['additional_info']}</p>"} for language in languages])
    return job_id


def insert_running_job(engine: Engine, client_id: str, status: str = "processing", total_lots: int = 4,
                       created_at: datetime | None = None) -> str:
    """A job row that is still running (pending, processing or translating)."""
    job_id = new_id("job-")
    created = created_at or datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(
            job_id=job_id, client_id=client_id, status=status, api_version="1.0.0", languages=["en", "de"],
            total_lots=total_lots, processed_lots=1, failed_lots=0, created_at=created,
            estimated_completion=created + timedelta(hours=1)))
    return job_id


def wait_published(gateway: Gateway, engine: Engine, job_id: str) -> None:
    """Until the relay has published the job's events (it reads their payloads meanwhile: a test
    measuring the gateway's memory waits for it)."""
    query = (select(func.count()).select_from(outbox)
             .where(outbox.c.job_id == job_id, outbox.c.published_at.is_(None)))

    def unpublished() -> int:
        with engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    wait_for(lambda: unpublished() == 0,
             lambda: f"the relay to publish the job's events ({unpublished()} left)", timeout_s=120,
             every_s=0.2)


def published_events(engine: Engine, bootstrap: str, topic: str) -> list[Envelope]:
    """Every event on `topic` once the relay has published each of its outbox rows: all there is.
    (Asking Kafka for one message more than was due waited out the whole timeout.)"""
    query = select(func.count()).select_from(outbox).where(outbox.c.topic == topic,
                                                           outbox.c.published_at.is_(None))

    def unpublished() -> int:
        with engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    wait_for(lambda: unpublished() == 0,
             lambda: f"the relay to publish the rows of {topic} ({unpublished()} left)", timeout_s=120,
             every_s=0.1)
    return read_to_end(bootstrap, topic)


def gateway_events(engine: Engine, job_id: str, event_type: str) -> list[Envelope]:
    """The job's events of a type the gateway accepted (its outbox rows), in order."""
    with engine.connect() as conn:
        return [decode(payload.encode()) for payload in conn.execute(
            select(outbox.c.payload).where(outbox.c.job_id == job_id, outbox.c.event_type == event_type)
            .order_by(outbox.c.id)).scalars()]


def jobs_written(engine: Engine, client_id: str) -> list[str]:
    """The ids of the client's jobs the gateway wrote (their outbox `JobSubmitted`)."""
    with engine.connect() as conn:
        return list(conn.execute(select(outbox.c.job_id).where(
            outbox.c.client_id == client_id, outbox.c.event_type == JobSubmitted.event_type)).scalars())


# A key's reservation as it waits on a lock of `idempotency_keys` (a prefix for `waiting_on_a_lock`):
# its INSERT, or the DELETE of expired keys one reservation in 100 runs before it (`_PURGE_ONE_IN`).
RESERVING = "% idempotency_keys"


def until(condition: Callable[[], bool], request: Future[httpx2.Response], what: str) -> None:
    """Wait for `condition`; fails after 30 s, or at once when `request` has ended meanwhile."""
    def holds() -> bool:
        if condition():
            return True
        assert not request.done(), f"the request ended before {what}"
        return False

    wait_for(holds, what)


@contextmanager
def intake_filled(gw: Gateway, engine: Engine) -> Iterator[Future[httpx2.Response]]:
    """Another big job holds the only slot, its durable write waiting on the outbox table, until
    the block ends; yields that job's request."""
    with ThreadPoolExecutor(1) as pool, engine.connect() as blocker:
        blocker.execute(text("LOCK TABLE outbox IN SHARE ROW EXCLUSIVE MODE"))
        taking = pool.submit(gw.submit, make_lots(30))
        until(lambda: gw.deps.metrics.registry.get_sample_value("lotlens_intake_jobs") == 1, taking,
              "the other job to take the slot")
        try:
            yield taking
        finally:
            blocker.rollback()
            taking.result(timeout=60)
