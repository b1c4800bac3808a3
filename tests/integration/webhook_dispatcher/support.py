"""The webhook dispatcher's test kit: a local receiver that answers per URL path, a finished
job written into the read models as result-store would, the dispatcher run in threads or as a
process, and its events read back from Kafka."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx2
import orjson
from confluent_kafka import Consumer
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import Engine, select, text

from lotlens_common import webhook_secrets
from lotlens_common.envelope import Envelope, decode
from lotlens_common.events import JobCompleted, WebhookDelivered, WebhookFailed
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import descriptions, dispatch_queue, jobs, lots
from lotlens_webhook_dispatcher.bootstrap import http_transport, workers
from lotlens_webhook_dispatcher.config import DispatcherSettings
from lotlens_webhook_dispatcher.worker import Dispatcher
from tests.conftest import new_id
from tests.events import committed as committed_on
from tests.servers import serve

CLIENT, KEY = "acme", "acme-shared-key"
INTERVALS = (0.2, 0.4, 0.8, 1.6)
RUSSIAN = "<p>Вмятина на переднем бампере, царапины на двери</p>"


# --- the receiver -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """One webhook the receiver got, and when."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def attempt(self) -> int:
        return int(self.headers["x-delivery-attempt"])

    @property
    def doc(self) -> dict[str, Any]:
        return dict(orjson.loads(self.body))


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Receiver:
    """Answers each request with `respond(request)`; remembers requests as they arrive."""

    respond: Callable[[Request], Reply] = lambda _request: Reply()
    url: str = ""
    arrived: list[Request] = field(default_factory=list)
    answered: dict[int, int] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: int = 0
    max_active: int = 0

    def on(self, path: str) -> list[Request]:
        with self.lock:
            return [request for request in self.arrived if request.path == path]

    def succeeded(self, path: str) -> list[Request]:
        with self.lock:
            return [request for n, request in enumerate(self.arrived)
                    if request.path == path and self.answered.get(n, 500) < 300]


@contextmanager
def receiver(respond: Callable[[Request], Reply]) -> Iterator[Receiver]:
    """A webhook receiver on a free loopback port."""
    state = Receiver(respond)

    class Hooks(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                              time.monotonic())
            with state.lock:
                state.arrived.append(request)
                number = len(state.arrived) - 1
                state.active += 1
                state.max_active = max(state.max_active, state.active)
            reply = state.respond(request)
            if reply.delay_s:
                state.release.wait(reply.delay_s)
            with state.lock:
                state.active -= 1
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                self.wfile.flush()
            except OSError:  # the dispatcher stopped waiting (a timeout scenario)
                return
            with state.lock:
                state.answered[number] = reply.status

        def log_message(self, *_args: object) -> None:
            """No line per request: the tests read the arrivals, not a log."""

    with serve(Hooks) as url:
        state.url = url
        try:
            yield state
        finally:
            state.release.set()


# --- read models, events, the dispatcher --------------------------------------------------------

def insert_finished_job(engine: Engine, lot_webhooks: list[str | None], text_bytes: int = 0,
                        client_id: str = CLIENT) -> str:
    """A completed job of the client with one lot per entry (its webhook URL), as result-store
    leaves it, and the client's webhook secret as the gateway makes it (without one the
    dispatcher holds the client's webhooks)."""
    job_id = str(uuid.uuid4())
    created = datetime.now(UTC) - timedelta(minutes=45)
    with engine.begin() as conn:
        webhook_secrets.ensure(conn, [client_id])
        conn.execute(jobs.insert().values(
            job_id=job_id, client_id=client_id, status="completed", api_version="2.0", languages=["en", "ru"],
            total_lots=len(lot_webhooks), processed_lots=len(lot_webhooks) - 1, failed_lots=1,
            images_processed=2 * len(lot_webhooks), webhook_configured=True, created_at=created,
            completed_at=created + timedelta(minutes=45), completion_published=True))
        for seq, url in enumerate(lot_webhooks):
            failed = seq == len(lot_webhooks) - 1
            conn.execute(lots.insert().values(
                job_id=job_id, lot_id=f"lot-{seq}", seq=seq, status="failed" if failed else "completed",
                additional_info="sedan", image_urls=["https://img/1.jpg"], webhook=url,
                processed_images=0 if failed else 2, missing_images=["https://img/1.jpg"] if failed else [],
                error_message="all images unreachable" if failed else None,
                processed_at=created + timedelta(minutes=40)))
            if not failed:
                conn.execute(descriptions.insert().values([
                    {"job_id": job_id, "lot_id": f"lot-{seq}", "language": "en",
                     "damages": "<p>Front bumper dented" + "." * text_bytes + "</p>"},
                    {"job_id": job_id, "lot_id": f"lot-{seq}", "language": "ru", "damages": RUSSIAN}]))
    return job_id


def publish_completed(settings: ServiceSettings, *job_ids: str) -> None:
    """`JobCompleted` for each job, as result-store emits it once the read models are final."""
    producer = EventProducer(settings.kafka, "test")
    for job_id in job_ids:
        event = JobCompleted(job_id=job_id, status="completed", completed_at=datetime.now(UTC),
                             total_lots=1, processed_lots=1, failed_lots=0)
        producer.publish(settings.topics.completions, Envelope(event=event, client_id=CLIENT))
    producer.flush()


def dispatcher_settings(settings: ServiceSettings, group: str, **changes: Any) -> DispatcherSettings:
    values: dict[str, Any] = dict(
        kafka=settings.kafka, database=settings.database, topics=settings.topics, allow_loopback_urls=True,
        clients={CLIENT: SecretStr(KEY)}, consumer_group=group, webhook_retry_intervals_s=INTERVALS,
        webhook_timeout_s=0.5, webhook_jitter=0.1, webhook_poll_interval_s=0.05,
        webhook_lease_margin_s=0.5, webhook_secrets_cache_s=0.0, metrics_port=0)
    values.update(changes)
    return DispatcherSettings(**values)


@contextmanager
def running(config: DispatcherSettings, engine: Engine, transport: httpx2.BaseTransport | None = None,
            dispatch_producer: EventProducer | None = None) -> Iterator[Dispatcher]:
    """The dispatcher's consumer and delivery loop in threads, stopped on exit; yields the
    delivery loop's `Dispatcher`."""
    stop = threading.Event()
    producers = [EventProducer(config.kafka, "consumer"),
                 dispatch_producer or EventProducer(config.kafka, "dispatcher")]
    new_transport = partial(http_transport, config, transport)
    made = workers(config, engine, new_transport, *producers)
    threads = [threading.Thread(target=work, args=(stop,), daemon=True) for work in made.values()]
    for thread in threads:
        thread.start()
    try:
        yield made["deliveries"].__self__  # type: ignore[attr-defined]  # the bound `Dispatcher.run`
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)


class KafkaDown(EventProducer):
    """The dispatcher's producer while the broker does not answer: every flush fails."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.down = threading.Event()
        self.down.set()

    def flush(self, timeout_s: float = 30.0) -> None:
        if self.down.is_set():
            self.discard()
            raise PublishError("the broker did not answer (test)")
        super().flush(timeout_s)


class WebhookEvents:
    """Reads the webhooks topic from its start."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers,
                                   "group.id": new_id("reader-"), "auto.offset.reset": "earliest"})
        self._consumer.subscribe([settings.topics.webhooks])
        self.seen: list[Any] = []
        self.envelopes: list[Envelope] = []

    def until(self, done: Callable[[list[Any]], bool], timeout_s: float = 30.0) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while not done(self.seen):
            assert time.monotonic() < deadline, f"timed out; events so far: {self.seen}"
            for message in self._consumer.consume(100, 0.2):
                if message.error() is None:
                    self.envelopes.append(decode(message.value() or b""))
                    self.seen.append(self.envelopes[-1].event)
        return self.seen

    def close(self) -> None:
        self._consumer.close()


def of(kind: type[Any], seen: list[Any], url: str | None = None) -> list[Any]:
    return [e for e in seen if isinstance(e, kind) and (url is None or e.webhook_url == url)]


def finals(seen: list[Any]) -> list[Any]:
    return of(WebhookDelivered, seen) + of(WebhookFailed, seen)


def queue_rows(engine: Engine, job_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(dispatch_queue).where(dispatch_queue.c.job_id == job_id)
                                 .order_by(dispatch_queue.c.webhook_url, dispatch_queue.c.part)).mappings())


def client_secret(engine: Engine) -> str:
    """The client's current `whsec_` secret, made as the gateway makes it at start-up."""
    with engine.begin() as conn:
        webhook_secrets.ensure(conn, [CLIENT])
        return webhook_secrets.live(conn, CLIENT, datetime.now(UTC))[0]


@contextmanager
def secrets_unreadable(engine: Engine) -> Iterator[None]:
    """PostgreSQL refuses every read of the webhook secrets (the table is renamed away), until exit."""
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE client_webhook_secrets RENAME TO client_webhook_secrets_away"))
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE client_webhook_secrets_away RENAME TO client_webhook_secrets"))


def state(db: Engine, job_id: str) -> list[tuple[str, int, int]]:
    """Each delivery's status, attempt count and interruptions."""
    return [(row["status"], row["attempt_count"], row["interruptions"]) for row in queue_rows(db, job_id)]


@contextmanager
def hand_back_refused(engine: Engine) -> Iterator[None]:
    """PostgreSQL refuses to put a claimed delivery back to `pending` unsent, until exit."""
    with engine.begin() as conn:
        conn.execute(text("""
            CREATE FUNCTION refuse_hand_back() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
                IF OLD.status = 'sending' AND NEW.status = 'pending' AND NEW.attempt_count < OLD.attempt_count
                THEN RAISE EXCEPTION 'the hand-back is refused (test)'; END IF;
                RETURN NEW; END $$"""))
        conn.execute(text("CREATE TRIGGER refuse_hand_back BEFORE UPDATE ON dispatch_queue "
                          "FOR EACH ROW EXECUTE FUNCTION refuse_hand_back()"))
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_hand_back ON dispatch_queue"))


@contextmanager
def one_webhook(db: Engine, path: str) -> Iterator[tuple[Any, str, str]]:
    """A receiver answering 200 and a finished job with one webhook URL on it, its client's secret
    made: (receiver, URL, job id)."""
    with receiver(lambda _request: Reply(200)) as hooks:
        url = f"{hooks.url}{path}"
        job_id = insert_finished_job(db, [url])
        client_secret(db)
        yield hooks, url, job_id


def quick(config: Any) -> Any:
    """Settings whose attempts time out, and whose leases run out, within a second."""
    return dispatcher_settings(config, new_id("g-"), webhook_timeout_s=0.3, webhook_lease_margin_s=0.3)


def attempts_not_started(reason: str = "database") -> float:
    """Attempts this process's dispatchers handed back unsent for `reason` (by default: PostgreSQL
    refused a read)."""
    name = "lotlens_webhook_attempts_not_started_total"
    return REGISTRY.get_sample_value(name, {"reason": reason}) or 0.0


def committed(settings: ServiceSettings, group: str) -> int:
    """Offsets the group has committed on the completions topic."""
    return committed_on(settings.kafka.bootstrap_servers, group, settings.topics.completions,
                        settings.topics.partitions)


# --- the tests ----------------------------------------------------------------------------------

class CountingTransport(httpx2.BaseTransport):
    """Counts what one dispatcher instance sends."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner, self.sent = inner, 0

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.sent += 1
        return self.inner.handle_request(request)


def start_process(config: ServiceSettings, group: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": config.database.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": config.kafka.bootstrap_servers,
        "KAFKA_CONSUME_BATCH_TIMEOUT_S": "0.05",
        "LOTLENS_TOPIC_COMPLETIONS": config.topics.completions,
        "LOTLENS_TOPIC_WEBHOOKS": config.topics.webhooks,
        "LOTLENS_TOPIC_DEAD_LETTER": config.topics.dead_letter,
        "LOTLENS_ALLOW_LOOPBACK_URLS": "true",
        "LOTLENS_CLIENTS": orjson.dumps({CLIENT: KEY}).decode(),
        "LOTLENS_CONSUMER_GROUP": group,
        "LOTLENS_WEBHOOK_RETRY_INTERVALS_S": "[0.5, 1, 2, 4]",
        "LOTLENS_WEBHOOK_TIMEOUT_S": "1",
        "LOTLENS_WEBHOOK_LEASE_MARGIN_S": "0.5",
        "LOTLENS_WEBHOOK_POLL_INTERVAL_S": "0.05",
        "LOTLENS_METRICS_PORT": "0",
        # A killed member must leave the group quickly, or the restarted one waits for it.
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
    }
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "lotlens_webhook_dispatcher"], env=env,
                                stdout=sink, stderr=sink)
