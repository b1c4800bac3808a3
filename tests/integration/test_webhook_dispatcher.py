"""The webhook dispatcher against real Kafka and PostgreSQL and a local receiver.

The read models of a finished job are written directly (as result-store would), `JobCompleted`
goes to the test's completions topic, and the dispatcher runs in threads (or, for the SIGKILL
test, as a process). The receiver records every request and answers per URL path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import Engine, make_url, select, text

from lotlens_common.db import make_engine
from lotlens_common.envelope import Envelope, decode
from lotlens_common.events import JobCompleted, WebhookAttempted, WebhookDelivered, WebhookFailed
from lotlens_common.kafka import EventProducer
from lotlens_common.settings import DatabaseSettings, ServiceSettings
from lotlens_common.tables import descriptions, dispatch_queue, jobs, lots, metadata
from lotlens_webhook_dispatcher.bootstrap import http_transport, workers
from lotlens_webhook_dispatcher.config import DispatcherSettings
from tests.conftest import new_id
from tests.seeds import seed_webhook_verifier
from tests.servers import free_port, serve

pytestmark = pytest.mark.integration

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
            pass

    with serve(Hooks) as url:
        state.url = url
        try:
            yield state
        finally:
            state.release.set()


# --- read models, events, the dispatcher --------------------------------------------------------

def insert_finished_job(engine: Engine, lot_webhooks: list[str | None], text_bytes: int = 0) -> str:
    """A completed job with one lot per entry (its webhook URL), as result-store leaves it."""
    job_id = str(uuid.uuid4())
    created = datetime.now(UTC) - timedelta(minutes=45)
    with engine.begin() as conn:
        conn.execute(jobs.insert().values(
            job_id=job_id, client_id=CLIENT, status="completed", api_version="2.0", languages=["en", "ru"],
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
        webhook_lease_margin_s=0.5, metrics_port=0)
    values.update(changes)
    return DispatcherSettings(**values)


@contextmanager
def running(config: DispatcherSettings, engine: Engine,
            transport: httpx.BaseTransport | None = None) -> Iterator[None]:
    """The dispatcher's consumer and delivery loop in threads, stopped on exit."""
    stop = threading.Event()
    producers = [EventProducer(config.kafka, "consumer"), EventProducer(config.kafka, "dispatcher")]
    new_transport = partial(http_transport, config, transport)
    threads = [threading.Thread(target=work, args=(stop,), daemon=True)
               for work in workers(config, engine, new_transport, *producers).values()]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)


class WebhookEvents:
    """Reads the webhooks topic from its start."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers,
                                   "group.id": new_id("reader-"), "auto.offset.reset": "earliest"})
        self._consumer.subscribe([settings.topics.webhooks])
        self.seen: list[Any] = []

    def until(self, done: Callable[[list[Any]], bool], timeout_s: float = 30.0) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while not done(self.seen):
            assert time.monotonic() < deadline, f"timed out; events so far: {self.seen}"
            for message in self._consumer.consume(100, 0.2):
                if message.error() is None:
                    self.seen.append(decode(message.value() or b"").event)
        return self.seen

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture()
def schema_engine(settings: ServiceSettings, engine: Engine) -> Iterator[tuple[Engine, str]]:
    """A private schema for this test: no other dispatcher (another test run, the end-to-end
    stack) can claim its deliveries, and it sees none of theirs."""
    schema = new_id("webhooks_")
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(settings.database.database_url).update_query_dict({"options": f"-csearch_path={schema}"})
    url_text = url.render_as_string(hide_password=False)
    private = make_engine(DatabaseSettings(DATABASE_URL=url_text))
    metadata.create_all(private)
    yield private, url_text
    private.dispose()
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture()
def db(schema_engine: tuple[Engine, str]) -> Engine:
    return schema_engine[0]


@pytest.fixture()
def config(settings: ServiceSettings, schema_engine: tuple[Engine, str]) -> ServiceSettings:
    """The test's settings, pointed at its private schema."""
    return settings.model_copy(update={"database": DatabaseSettings(DATABASE_URL=schema_engine[1])})


@pytest.fixture()
def events(settings: ServiceSettings) -> Iterator[WebhookEvents]:
    reader = WebhookEvents(settings)
    yield reader
    reader.close()


def of(kind: type[Any], seen: list[Any], url: str | None = None) -> list[Any]:
    return [e for e in seen if isinstance(e, kind) and (url is None or e.webhook_url == url)]


def finals(seen: list[Any]) -> list[Any]:
    return of(WebhookDelivered, seen) + of(WebhookFailed, seen)


def queue_rows(engine: Engine, job_id: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(dispatch_queue).where(dispatch_queue.c.job_id == job_id)
                                 .order_by(dispatch_queue.c.webhook_url, dispatch_queue.c.part)).mappings())


def verify_standard_webhook(key: str, headers: dict[str, str], body: bytes, tolerance_s: int = 300) -> bool:
    """A Standard Webhooks verifier, as a receiver would write it (svix style)."""
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance_s:
        return False
    expected = base64.b64encode(hmac.new(key.encode(), f"{msg_id}.{timestamp}.".encode() + body,
                                         hashlib.sha256).digest())
    for signature in headers["webhook-signature"].split(" "):
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return True
    return False


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def committed(settings: ServiceSettings, group: str) -> int:
    """Offsets the group has committed on the completions topic, summed over partitions."""
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": group})
    try:
        topic = settings.topics.completions
        partitions = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=10))
    finally:
        consumer.close()


# --- the tests ----------------------------------------------------------------------------------

def test_each_url_gets_one_signed_delivery_with_only_its_lots(config, db, events):
    verify_webhook_signature = seed_webhook_verifier()
    delivered_before = REGISTRY.get_sample_value("webhook_deliveries_total", {"status": "delivered"}) or 0
    with receiver(lambda _r: Reply(200)) as hooks:
        a, b = f"{hooks.url}/a", f"{hooks.url}/b"
        job_id = insert_finished_job(db, [a, b, None, a])
        publish_completed(config, job_id)
        with running(dispatcher_settings(config, new_id("g-")), db):
            seen = events.until(lambda seen: len(of(WebhookDelivered, seen)) == 2)
    by_path = {request.path: request for request in hooks.arrived}
    assert sorted(by_path) == ["/a", "/b"] and len(hooks.arrived) == 2
    assert [lot["lot_id"] for lot in by_path["/a"].doc["lots"]] == ["lot-0", "lot-3"]
    assert [lot["lot_id"] for lot in by_path["/b"].doc["lots"]] == ["lot-1"]
    for request in by_path.values():
        headers, doc = request.headers, request.doc
        assert verify_webhook_signature(request.body.decode("utf-8"), headers["x-signature"], KEY)
        assert verify_standard_webhook(KEY, headers, request.body)
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"] == "Generation-Service/2.0"
        assert headers["x-delivery-attempt"] == "1" and headers["x-job-id"] == job_id
        assert list(doc) == ["event", "job_id", "status", "completed_at", "processing_summary", "lots"]
        assert doc["event"] == "batch_job_completed" and doc["status"] == "completed"
        assert doc["processing_summary"]["total_processing_time"] == "45 minutes"
        assert RUSSIAN.encode() in request.body
    failed_lot = by_path["/a"].doc["lots"][1]
    assert failed_lot["status"] == "failed" and failed_lot["error_message"] == "all images unreachable"
    assert by_path["/a"].doc["lots"][0]["descriptions"] == [
        {"language": "en", "damages": "<p>Front bumper dented</p>"}, {"language": "ru", "damages": RUSSIAN}]
    delivered = {e.webhook_url: e for e in of(WebhookDelivered, seen)}
    assert {url: e.attempts for url, e in delivered.items()} == {a: 1, b: 1}
    assert delivered[a].delivery_id == by_path["/a"].headers["webhook-id"]
    attempted = of(WebhookAttempted, seen)
    assert sorted((e.webhook_url, e.attempt, e.succeeded, e.status_code) for e in attempted) == \
        [(a, 1, True, 200), (b, 1, True, 200)]
    assert [row["status"] for row in queue_rows(db, job_id)] == ["delivered", "delivered"]
    delivered_after = REGISTRY.get_sample_value("webhook_deliveries_total", {"status": "delivered"})
    assert delivered_after == delivered_before + 2
    timed = REGISTRY.get_sample_value("webhook_attempt_duration_seconds_count", {"outcome": "success"})
    assert (timed or 0) >= 2


def test_failures_are_retried_on_schedule_then_failed_after_five_attempts(config, db, events):
    busy_once: set[str] = set()

    def respond(request: Request) -> Reply:
        if request.path == "/busy" and request.path not in busy_once:
            busy_once.add(request.path)
            return Reply(503, {"Retry-After": "1"})
        return {"/500": Reply(500), "/slow": Reply(200, delay_s=1.5), "/gone": Reply(410),
                "/redirect": Reply(302, {"Location": "/target"})}.get(request.path, Reply(200))

    with receiver(respond) as hooks:
        urls = {name: f"{hooks.url}/{name}" for name in ("500", "slow", "gone", "redirect", "busy")}
        urls["refused"] = f"http://127.0.0.1:{free_port()}/hook"
        job_id = insert_finished_job(db, [*urls.values(), None])
        publish_completed(config, job_id)
        with running(dispatcher_settings(config, new_id("g-")), db):
            seen = events.until(lambda seen: len(finals(seen)) == 6)
            time.sleep(0.5)  # nothing more may come after the final events
    failed = {e.webhook_url: e for e in of(WebhookFailed, seen)}
    assert {url: failed[url].attempts for url in failed} == {
        urls["500"]: 5, urls["slow"]: 5, urls["redirect"]: 5, urls["refused"]: 5, urls["gone"]: 1}
    for name in ("500", "slow", "redirect"):
        assert [r.attempt for r in hooks.on(f"/{name}")] == [1, 2, 3, 4, 5]
    gaps = [b.at - a.at for a, b in zip(hooks.on("/500"), hooks.on("/500")[1:], strict=False)]
    assert all(gap >= interval * 0.9 - 0.05 for gap, interval in zip(gaps, INTERVALS, strict=True)), gaps
    assert all(gap <= interval * 1.1 + 0.5 for gap, interval in zip(gaps, INTERVALS, strict=True)), gaps
    assert len(hooks.on("/gone")) == 1 and not hooks.on("/target")

    def errors(name: str) -> list[str]:
        return [e.error for e in sorted(of(WebhookAttempted, seen, urls[name]), key=lambda e: e.attempt)]

    assert all(error.startswith("timeout") for error in errors("slow"))
    assert len(errors("refused")) == 5
    assert all(error.startswith("connection failed") for error in errors("refused"))
    assert all("not followed" in error for error in errors("redirect"))
    assert errors("500") == ["HTTP 500"] * 5
    attempts_500 = sorted(of(WebhookAttempted, seen, urls["500"]), key=lambda e: e.attempt)
    assert [e.next_attempt_at is not None for e in attempts_500] == [True, True, True, True, False]
    assert all(e.latency_ms is not None and e.response_body == "ok" for e in attempts_500)
    busy = hooks.on("/busy")
    assert [r.attempt for r in busy] == [1, 2] and busy[1].at - busy[0].at >= 0.95
    assert len(of(WebhookDelivered, seen)) == 1 and of(WebhookDelivered, seen)[0].webhook_url == urls["busy"]
    statuses = {row["webhook_url"]: (row["status"], row["attempt_count"])
                for row in queue_rows(db, job_id)}
    assert statuses[urls["gone"]] == ("failed", 1) and statuses[urls["500"]] == ("failed", 5)
    assert statuses[urls["busy"]] == ("delivered", 2)


def test_a_slow_endpoint_holds_only_its_own_slots(config, db, events):
    with receiver(lambda _r: Reply(200, delay_s=0.6)) as slow, receiver(lambda _r: Reply(200)) as fast:
        webhooks: list[str | None] = [f"{slow.url}/{n}" for n in range(12)]
        job_id = insert_finished_job(db, [*webhooks, f"{fast.url}/quick", None])
        publish_completed(config, job_id)
        # Five slots in all, four per host: the slow host can never take the fast one's slot.
        with running(dispatcher_settings(config, new_id("g-"), webhook_concurrency=5,
                                         webhook_per_host_concurrency=4, webhook_timeout_s=2), db):
            events.until(lambda seen: len(of(WebhookDelivered, seen)) == 13)
    assert slow.max_active == 4
    assert fast.arrived[0].at - min(r.at for r in slow.arrived) < 0.3


def test_a_redelivered_job_completed_creates_no_second_delivery(config, db, events):
    group = new_id("g-")
    with receiver(lambda _r: Reply(200)) as hooks:
        job_id = insert_finished_job(db, [f"{hooks.url}/a", f"{hooks.url}/b"])
        publish_completed(config, job_id)
        publish_completed(config, job_id)
        with running(dispatcher_settings(config, group), db):
            events.until(lambda seen: len(of(WebhookDelivered, seen)) == 2)
            publish_completed(config, job_id)
            wait_for(lambda: committed(config, group) == 3)
            time.sleep(0.3)
    assert sorted(request.path for request in hooks.arrived) == ["/a", "/b"]
    assert len(queue_rows(db, job_id)) == 2


class CountingTransport(httpx.BaseTransport):
    """Counts what one dispatcher instance sends."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner, self.sent = inner, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        return self.inner.handle_request(request)


def test_two_dispatchers_make_each_attempt_exactly_once(config, db, events):
    with receiver(lambda r: Reply(500 if r.attempt == 1 else 200, delay_s=0.05)) as hooks:
        job_ids = [insert_finished_job(db, [f"{hooks.url}/{n}/a", f"{hooks.url}/{n}/b", None])
                   for n in range(6)]
        group = new_id("g-")
        two = dispatcher_settings(config, group, webhook_concurrency=2)
        transports = [CountingTransport(httpx.HTTPTransport()) for _ in range(2)]
        with ExitStack() as stack:
            for transport in transports:
                stack.enter_context(running(two, db, transport))
            publish_completed(config, *job_ids)
            seen = events.until(lambda seen: len(of(WebhookDelivered, seen)) == 12, timeout_s=45)
            time.sleep(0.5)
    sent = [(request.headers["webhook-id"], request.attempt) for request in hooks.arrived]
    assert len(sent) == 24 and len(set(sent)) == 24
    assert all(transport.sent > 0 for transport in transports), [t.sent for t in transports]
    assert sorted(e.attempts for e in of(WebhookDelivered, seen)) == [2] * 12
    assert len(of(WebhookAttempted, seen)) == 24


def test_a_delivery_larger_than_the_limit_arrives_in_complete_numbered_parts(config, db, events):
    verify_webhook_signature = seed_webhook_verifier()
    limit = 3000
    with receiver(lambda _r: Reply(200)) as hooks:
        job_id = insert_finished_job(db, [f"{hooks.url}/big"] * 10, text_bytes=700)
        publish_completed(config, job_id)
        with running(dispatcher_settings(config, new_id("g-"), webhook_max_payload_bytes=limit), db):
            wait_for(lambda: bool(queue_rows(db, job_id)))
            total = queue_rows(db, job_id)[0]["total_parts"]
            events.until(lambda seen: len(of(WebhookDelivered, seen)) == total)
    parts = sorted(hooks.arrived, key=lambda r: r.doc["part"])
    assert total >= 3 and len(parts) == total
    assert [(r.doc["part"], r.doc["total_parts"]) for r in parts] == [(p, total) for p in range(1, total + 1)]
    assert all(len(r.body) <= limit for r in parts)
    assert [lot["lot_id"] for r in parts for lot in r.doc["lots"]] == [f"lot-{n}" for n in range(10)]
    assert all(verify_webhook_signature(r.body.decode(), r.headers["x-signature"], KEY) for r in parts)
    assert len({r.headers["webhook-id"] for r in parts}) == total


def _start_process(config: ServiceSettings, group: str, log: Path) -> subprocess.Popen[bytes]:
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


def test_sigkill_mid_attempt_then_restart_continues_the_schedule_and_delivers_once(
        config, db, events, tmp_path):
    healthy = threading.Event()

    def respond(request: Request) -> Reply:
        if healthy.is_set():
            return Reply(200)
        if request.path == "/hang" and request.attempt == 2:
            return Reply(500, delay_s=20)  # the dispatcher is killed while it waits for this
        return Reply(500)

    log, group = tmp_path / "dispatcher.log", new_id("g-")
    with receiver(respond) as hooks:
        hang, flaky = f"{hooks.url}/hang", f"{hooks.url}/flaky"
        job_id = insert_finished_job(db, [hang, flaky, None])
        publish_completed(config, job_id)
        first = _start_process(config, group, log)
        try:
            wait_for(lambda: len(hooks.on("/hang")) == 1 and len(hooks.on("/flaky")) >= 1, timeout_s=30)
            wait_for(lambda: any(request.attempt == 2 for request in hooks.on("/hang")))
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            healthy.set()
            hooks.release.set()  # the hung request ends; its answer goes nowhere
            second = _start_process(config, group, log)
            try:
                seen = events.until(lambda seen: len(of(WebhookDelivered, seen)) == 2, timeout_s=40)
                time.sleep(0.5)
            finally:
                second.send_signal(signal.SIGTERM)
                assert second.wait(20) == 0, log.read_text()
        finally:
            if first.poll() is None:
                first.kill()
    hang_attempts = sorted(of(WebhookAttempted, seen, hang), key=lambda e: e.attempt)
    assert [(e.attempt, e.succeeded) for e in hang_attempts] == [(1, False), (2, False), (3, True)]
    assert hang_attempts[1].error.startswith("interrupted")
    assert [r.attempt for r in hooks.on("/hang")] == [1, 2, 3]
    assert len(hooks.succeeded("/hang")) == 1 and len(hooks.succeeded("/flaky")) == 1
    # The kill may land on a /flaky attempt too: then it is recorded as interrupted, never repeated.
    flaky_sent = [r.attempt for r in hooks.on("/flaky")]
    assert flaky_sent == sorted(set(flaky_sent))
    flaky_recorded = {e.attempt for e in of(WebhookAttempted, seen, flaky)}
    assert flaky_recorded == set(range(1, max(flaky_recorded) + 1)) and max(flaky_recorded) == flaky_sent[-1]
    assert sorted(e.webhook_url for e in of(WebhookDelivered, seen)) == sorted([hang, flaky])
    assert [row["status"] for row in queue_rows(db, job_id)] == ["delivered", "delivered"]

