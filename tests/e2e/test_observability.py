"""The operations surface of the five running services, scraped over HTTP as Prometheus and the
kubelet would: metrics on the configured address, liveness apart from readiness, lag per partition."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine, text

from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCompleted
from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings, TopicSettings
from tests.conftest import ROOT, Infra, new_id
from tests.e2e.harness import Stack
from tests.e2e.scraping import samples, scrape
from tests.e2e.workload import cars
from tests.polling import wait_for
from tests.seeds import seed_client_class
from tests.servers import WebhookReceiver, free_port

pytestmark = pytest.mark.e2e

# Another loopback address than the default 127.0.0.1: answering there proves the setting is honoured.
OPS_HOST = "127.0.0.2"
# The six metrics of the 1.x documentation (seed 004): their names and the one service exporting each.
SEED_METRICS = {
    "generation_requests_total": "gateway",
    "generation_duration_seconds": "gateway",
    "openai_api_errors_total": "gateway",
    "database_operations_total": "gateway",
    "webhook_deliveries_total": "webhook-dispatcher",
    "batch_jobs_total": "result-store",
}
# What prometheus_client adds to every process (and the `_created` twin of each counter and
# histogram): not LotLens's own metrics.
RUNTIME_PREFIXES = ("python_", "process_")
CONSUMER_GROUPS = {"vision-batcher": "lotlens-vision-batcher", "translator": "lotlens-translator",
                   "result-store": "lotlens-result-store",
                   "webhook-dispatcher": "lotlens-webhook-dispatcher"}


@pytest.fixture()
def observed(infra: Infra, stack_engine: Engine, topics: TopicSettings, tmp_path: Path) -> Iterator[Stack]:
    """The whole stack, its consumers serving operations on OPS_HOST with a fast lag refresh."""
    running = Stack(infra=infra, topics=topics, logs=tmp_path,
                    database_url=stack_engine.url.render_as_string(hide_password=False),
                    extra_env={"LOTLENS_METRICS_HOST": OPS_HOST, "KAFKA_LAG_INTERVAL_S": "0.5",
                               "LOTLENS_OPENAI_CHECK_INTERVAL_S": "0.5"})
    try:
        running.up()
        yield running
    finally:
        running.down()


def ops_url(stack: Stack, service: str) -> str:
    return f"http://{OPS_HOST}:{stack.ops_ports[service]}"


def declared(text: str) -> dict[str, str]:
    """Every metric name a scrape declares (`# TYPE` lines, counters with `_total`) and its type."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


def test_every_service_is_probed_and_scraped_on_the_configured_address(
        observed: Stack, stack_engine: Engine, images: str, receiver: WebhookReceiver) -> None:
    client = seed_client_class()(observed.url, observed.client_key)
    job_id, error = client.batch_generate(cars(images, 3, new_id("obs")), languages=["en", "de"],
                                          webhook_url=f"{receiver.url}/hooks")
    assert error is None, error
    _, error = client.poll_for_completion(job_id, poll_interval=0.5, max_wait_time=120)
    assert error is None, error
    wait_for(lambda: receiver.received, "the job's webhook", every_s=0.1)

    for service in ("gateway", *CONSUMER_GROUPS):
        url = ops_url(observed, service)
        live = httpx2.get(f"{url}/livez", timeout=5)
        assert live.status_code == 200 and live.json()["status"] == "alive", (service, live.text)
        ready = httpx2.get(f"{url}/readyz", timeout=5)
        assert ready.status_code == 200, (service, ready.text)
        # The gateway asks no dependency: it answers a database outage 503 itself.
        needed = {"serving"} if service == "gateway" else {"database", "kafka"}
        checks = ready.json()["checks"]
        assert set(checks.values()) == {"ok"} and needed <= set(checks), service

    gateway_ops = ops_url(observed, "gateway")
    health = wait_for(lambda: (h := httpx2.get(f"{gateway_ops}/health", timeout=5).json())
                      ["openai"] != "unknown" and h, "the gateway's health to know OpenAI", timeout_s=60,
                      every_s=0.3)
    contract = {"status", "service", "timestamp", "version", "database", "background_worker"}
    assert contract <= set(health) and health["openai"] == "reachable"
    # The API port: the contract's fields alone, and no metrics or probes.
    assert set(httpx2.get(f"{observed.url}/health", timeout=5).json()) == contract
    for path in ("/metrics", "/livez", "/readyz"):
        assert httpx2.get(f"{observed.url}{path}", timeout=5).status_code == 404, path

    # Lag: each consumer reports its own assignment (one instance: every partition of its topics),
    # and once the job is done nothing is left behind.
    partitions = observed.topics.partitions
    prefix = f"{observed.topics.submissions}."
    for service, group in CONSUMER_GROUPS.items():
        def drained(service: str = service, group: str = prefix + group) -> list[Any]:
            text = scrape(ops_url(observed, service))
            lag = [s for s in samples(text, "lotlens_kafka_consumer_lag_messages") if s[0]["group"] == group]
            assigned = samples(text, "lotlens_kafka_consumer_assigned_partitions")
            done = lag and sum(value for _, value in lag) == 0 and assigned[0][1] == len(lag)
            return lag if done else []
        lag = wait_for(drained, f"{service}'s lag drained, per partition", timeout_s=60, every_s=0.3)
        assert len(lag) % partitions == 0
        assert {labels["partition"] for labels, _ in lag} == {str(p) for p in range(partitions)}

    scrapes = {service: scrape(ops_url(observed, service)) for service in ("gateway", *CONSUMER_GROUPS)}
    exported = {service: declared(text) for service, text in scrapes.items()}
    for name, owner in SEED_METRICS.items():
        assert [s for s, names in exported.items() if name in names] == [owner], name
    own = {name for names in exported.values() for name in names
           if not name.startswith(RUNTIME_PREFIXES) and not name.endswith("_created")}
    assert all(name.startswith("lotlens_") or name in SEED_METRICS for name in own), sorted(own)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not [name for name in own if f"`{name}`" not in readme], "metrics missing from the README table"

    deliveries = samples(scrapes["webhook-dispatcher"], "webhook_deliveries_total")
    # Both outcomes exported from the start (the failure-rate alert takes increase() of them).
    assert sorted(deliveries, key=str) == [({"status": "failed"}, 0.0), ({"status": "success"}, 1.0)]
    jobs = {labels["status"]: value for labels, value in samples(scrapes["result-store"], "batch_jobs_total")}
    assert jobs == {"pending": 1.0, "completed": 1.0}
    # Logs: JSON on every line of every process, the job's id on the gateway's lines about it,
    # no per-request lines of the HTTP clients.
    for service in ("gateway", *CONSUMER_GROUPS):
        entries = [json.loads(line) for line in (observed.logs / f"{service}.log").read_text().splitlines()]
        assert not [e for e in entries if e["logger"].startswith(("httpx2", "httpcore2", "openai"))
                    and e["level"] == "INFO"], service
        about = [e for e in entries if job_id in e["msg"]]
        assert all(e.get("job_id") == job_id for e in about), (service, about[:3])
        if service == "gateway":
            assert len(about) >= 2, "the polls of the job are logged with its id"
    batches = samples(scrapes["vision-batcher"], "lotlens_openai_batches")
    assert {labels["stage"] for labels, _ in batches} == {"vision"}
    assert {"validating", "in_progress", "finalizing"} <= {labels["status"] for labels, _ in batches}
    for service in ("vision-batcher", "translator"):  # what tells a lost OpenAI from a flaky one
        answered = {labels["status_class"]: value
                    for labels, value in samples(scrapes[service], "lotlens_openai_answers_total")}
        assert answered["2xx"] > 0 and answered["5xx"] == 0, (service, answered)
    # PostgreSQL's view of the same stack: each service's sessions under its own name.
    with stack_engine.connect() as conn:
        names = set(conn.execute(text("SELECT application_name FROM pg_stat_activity "
                                      "WHERE datname = current_database()")).scalars())
    assert {f"lotlens-{service}" for service in ("gateway", *CONSUMER_GROUPS)} <= names, names


def test_a_consumer_without_its_database_stays_alive_reports_unready_and_exports_its_lag(
        infra: Infra, topics: TopicSettings, tmp_path: Path) -> None:
    """The dispatcher's handler retries while PostgreSQL is away: the kubelet must not restart it,
    the pod must not be ready, and the messages it cannot handle show as lag of its partitions."""
    dead_database = f"postgresql+psycopg2://lotlens:lotlens@127.0.0.1:{free_port()}/lotlens"
    stack = Stack(infra=infra, topics=topics, logs=tmp_path, database_url=dead_database,
                  extra_env={"LOTLENS_METRICS_HOST": OPS_HOST, "KAFKA_LAG_INTERVAL_S": "0.5"})
    producer = EventProducer(KafkaSettings(bootstrap_servers=infra.kafka_bootstrap), "test")
    waiting = 7
    for _ in range(waiting):
        producer.publish(topics.completions, Envelope(client_id="c", event=JobCompleted(
            job_id=new_id("job"), status="completed", completed_at=datetime.now(UTC), total_lots=1,
            processed_lots=1, failed_lots=0)))
    producer.flush()
    stack.start("webhook-dispatcher")
    try:
        url = ops_url(stack, "webhook-dispatcher")
        group = f"{topics.submissions}.lotlens-webhook-dispatcher"

        def lag() -> float:
            try:
                text = scrape(url)
            except httpx2.HTTPError:
                return 0
            values = [v for labels, v in samples(text, "lotlens_kafka_consumer_lag_messages")
                      if labels["group"] == group]
            return sum(values) if len(values) == topics.partitions else 0

        assert wait_for(lag, "the dispatcher's lag on every partition", timeout_s=60, every_s=0.3) == waiting
        ready = httpx2.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        checks = ready.json()["checks"]
        assert checks["kafka"] == "ok" and checks["database"] != "ok"
        live = httpx2.get(f"{url}/livez", timeout=5)
        assert live.status_code == 200, live.text
    finally:
        stack.down()
