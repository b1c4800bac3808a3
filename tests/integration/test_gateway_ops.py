"""Health on both ports, metrics and probes on the operations port, the image URL check, and the
OpenAPI document matching real answers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx2
import jsonschema
import pytest
from confluent_kafka import Consumer
from sqlalchemy import Engine

from lotlens_common.db import make_engine
from lotlens_common.read_models import JobView
from lotlens_common.settings import DatabaseSettings, KafkaSettings, ServiceSettings
from lotlens_gateway.config import CONSUMER_GROUPS
from tests.conftest import new_id
from tests.integration.gateway_support import (
    Gateway,
    insert_finished_job,
    insert_running_job,
    make_lots,
    running_gateway,
)
from tests.network_guard import stub_resolver
from tests.servers import image_host

pytestmark = pytest.mark.integration


@pytest.fixture()
def images() -> Iterator[str]:
    with image_host() as url:
        yield url


def test_health_is_200_and_degraded_while_no_pipeline_consumer_runs(
        settings: ServiceSettings, engine: Engine) -> None:
    # A group prefix of our own: pipeline services other tests run must not count as ours.
    kafka = KafkaSettings(bootstrap_servers=settings.kafka.bootstrap_servers, group_prefix=new_id("idle-"))
    with running_gateway(settings, engine, kafka=kafka) as gw:
        response = httpx2.get(f"{gw.ops_url}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["service"] == "lotlens-gateway" and body["timestamp"].endswith("Z") and body["version"]
    assert body["database"] == "connected" and body["kafka"] == "connected"
    assert body["status"] == "degraded" and body["background_worker"] == "degraded"
    assert set(body["consumer_groups"]) == set(CONSUMER_GROUPS)
    assert all(group["members"] == 0 for group in body["consumer_groups"].values())
    assert body["openai"] in {"unknown", "reachable", "unauthorized", "unreachable"}


def test_health_is_healthy_when_every_consumer_group_has_members(
        settings: ServiceSettings, engine: Engine) -> None:
    prefix = new_id("health-") + "."
    kafka = KafkaSettings(bootstrap_servers=settings.kafka.bootstrap_servers, group_prefix=prefix)
    consumers = [Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": prefix + group,
                           "session.timeout.ms": 6000}) for group in CONSUMER_GROUPS]
    try:
        for consumer in consumers:
            consumer.subscribe([settings.topics.submissions])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(c.assignment() for c in consumers):
            for consumer in consumers:
                consumer.poll(0.1)
        with running_gateway(settings, engine, kafka=kafka, health_cache_s=0) as gw:
            body = httpx2.get(f"{gw.ops_url}/health").json()
            public = httpx2.get(f"{gw.url}/health").json()
        assert public["status"] == "healthy" and public["background_worker"] == "running", public
        assert body["status"] == "healthy" and body["background_worker"] == "running", body
        assert all(group["members"] == 1 for group in body["consumer_groups"].values())
    finally:
        for consumer in consumers:
            consumer.close()


def test_health_is_503_when_kafka_or_postgresql_is_down_and_readiness_needs_neither(
        settings: ServiceSettings, engine: Engine) -> None:
    with running_gateway(settings, engine, kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9")) as gw:
        response = httpx2.get(f"{gw.ops_url}/health", timeout=30)
        assert response.status_code == 503
        assert response.json()["kafka"] == "disconnected" and response.json()["status"] == "unhealthy"
        public = httpx2.get(f"{gw.url}/health", timeout=30)
        assert public.status_code == 503 and public.json()["status"] == "unhealthy"
        # The probes: ready (intake goes on into the outbox) and alive (no restart).
        ready = httpx2.get(f"{gw.ops_url}/readyz", timeout=30)
        assert ready.status_code == 200 and ready.json()["checks"] == {"serving": "ok"}
        assert httpx2.get(f"{gw.ops_url}/livez", timeout=5).status_code == 200
    dead_db = make_engine(DatabaseSettings(DATABASE_URL="postgresql+psycopg2://lotlens:x@127.0.0.1:9/lotlens"),
                          "tests")
    with running_gateway(settings, dead_db) as gw:
        response = httpx2.get(f"{gw.url}/health", timeout=30)
        assert response.status_code == 503 and response.json()["database"] == "disconnected"
        # Ready all the same: taken out of the Service, every gateway left the answer to the
        # ingress (its own 503, no Retry-After, not the contract's body), and the API error alert
        # saw no request at all.
        ready = httpx2.get(f"{gw.ops_url}/readyz", timeout=30)
        assert ready.status_code == 200 and ready.json()["checks"] == {"serving": "ok"}, ready.text
        assert httpx2.get(f"{gw.ops_url}/livez", timeout=5).status_code == 200
        # Requests that need the database answer 503 with the contract's body, not a trace.
        status = gw.get_job("/api/v1/batch-status/{job_id}", "some-job")
        assert status.status_code == 503 and status.json()["code"] == "SERVICE_UNAVAILABLE"
        assert status.headers["retry-after"] == "5"
    dead_db.dispose()


def test_an_unexpected_error_is_a_500_with_the_contract_body(
        gateway: Gateway, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_job_id: str, _client_id: str) -> tuple[JobView, dict[str, list[str]]]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway.deps.store, "status_for_client", broken)
    response = gateway.get_job("/api/v1/batch-status/{job_id}", insert_running_job(engine, gateway.client_id))
    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error", "message": "An unexpected error occurred",
                               "code": "INTERNAL_ERROR"}


def test_metrics_count_requests_jobs_and_database_operations(gateway: Gateway) -> None:
    assert gateway.submit(make_lots(2)).status_code == 201
    text = httpx2.get(f"{gateway.ops_url}/metrics").text
    assert 'generation_requests_total{mode="batch"} 1.0' in text
    assert 'generation_duration_seconds_count{mode="batch"} 1.0' in text
    assert "batch_jobs_total" not in text  # the result-store's alone: it sees every status
    assert 'database_operations_total{operation="create"}' in text
    assert "openai_api_errors_total" in text


def test_image_validation_sorts_urls_into_valid_and_unreachable(gateway: Gateway, images: str) -> None:
    urls = [f"{images}/car-1.png", f"{images}/car-missing.png", f"{images}/car-2.png", f"{images}/page.html"]
    raw = json.dumps({"urls": urls}).encode()
    response = httpx2.post(f"{gateway.url}/api/v1/test-image-validation", content=raw,
                          headers={"X-Signature": gateway.sign(raw), "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["valid_urls"] == [urls[0], urls[2]]
    assert body["unreachable_urls"] == [urls[1], urls[3]]
    assert body["threshold_met"] is True
    assert body["reasons"][urls[1]] == "HTTP 404"


def test_image_validation_gives_one_reason_for_a_private_and_an_unresolvable_host(gateway: Gateway) -> None:
    # "cannot resolve X" against "X resolves to a private address: refused" told any client which
    # of the network's internal names exist.
    describer = gateway.deps.describer
    stub = stub_resolver({"intranet.example": "10.1.2.3"})
    gateway.deps.describer = replace(describer, images=replace(describer.images, resolve=stub))
    urls = ["https://intranet.example/car.png", "https://nowhere.example/car.png"]
    raw = json.dumps({"urls": urls}).encode()
    response = httpx2.post(f"{gateway.url}/api/v1/test-image-validation", content=raw,
                           headers={"X-Signature": gateway.sign(raw), "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["reasons"] == {
        urls[0]: "refused: intranet.example does not resolve to a public address",
        urls[1]: "refused: nowhere.example does not resolve to a public address"}


def test_image_validation_needs_a_signature_over_the_body(gateway: Gateway, images: str) -> None:
    raw = json.dumps({"urls": [f"{images}/car-1.png"]}).encode()
    unsigned = httpx2.post(f"{gateway.url}/api/v1/test-image-validation", content=raw)
    assert unsigned.status_code == 401 and unsigned.json()["code"] == "MISSING_SIGNATURE"
    wrong = httpx2.post(f"{gateway.url}/api/v1/test-image-validation", content=raw,
                       headers={"X-Signature": gateway.sign(raw + b" ")})
    assert wrong.status_code == 403
    empty = json.dumps({"urls": []}).encode()
    refused = httpx2.post(f"{gateway.url}/api/v1/test-image-validation", content=empty,
                         headers={"X-Signature": gateway.sign(empty)})
    assert refused.status_code == 422 and refused.json()["code"] == "VALIDATION_ERROR"


def test_every_answer_matches_the_published_openapi_schema(gateway: Gateway, engine: Engine) -> None:
    document = httpx2.get(f"{gateway.url}/openapi.json").json()
    paths = document["paths"]
    for path in ("/api/v1/generate-descriptions", "/api/v1/batch-status/{job_id}",
                 "/api/v1/batch-results/{job_id}",
                 "/api/v1/batch-results/{job_id}/download", "/api/v1/batch-jobs",
                 "/api/v1/batch-jobs/{job_id}/cancel", "/health", "/api/v1/test-image-validation"):
        assert path in paths, path
    submit = paths["/api/v1/generate-descriptions"]["post"]
    assert {"200", "201", "400", "401", "403", "408", "409", "413", "422", "429", "431", "502", "503",
            "504"} <= set(
        submit["responses"])

    def check(instance: object, model: str) -> None:
        jsonschema.validate(instance, {"$ref": f"#/components/schemas/{model}",
                                       "components": document["components"]})

    lots = make_lots(2)
    check({"signature": gateway.lots_signature(lots), "languages": ["en"], "lots": lots}, "SubmissionRequest")
    accepted = gateway.submit(lots).json()
    check(accepted, "BatchAccepted")
    check(gateway.get_job("/api/v1/batch-status/{job_id}", accepted["job_id"]).json(), "JobStatus")
    check(gateway.submit(make_lots(2), languages=["xx"]).json(), "ErrorBody")
    finished = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en", "de"], failed=[])
    check(gateway.get_job("/api/v1/batch-results/{job_id}", finished).json(), "JobResults")
    running = insert_running_job(engine, gateway.client_id)
    check(gateway.get_job("/api/v1/batch-results/{job_id}", running).json(), "NotCompleted")
    check(gateway.list_jobs("limit=5").json(), "JobList")
    cancel = httpx2.post(f"{gateway.url}/api/v1/batch-jobs/{running}/cancel",
                        headers={"X-Signature": gateway.sign(running)})
    check(cancel.json(), "Cancelled")
    check(httpx2.post(f"{gateway.url}/api/v1/batch-jobs/{finished}/cancel",
                     headers={"X-Signature": gateway.sign(finished)}).json(), "CannotCancel")
    check(httpx2.get(f"{gateway.url}/health").json(), "Health")


def test_head_is_answered_like_get_without_a_body(gateway: Gateway, engine: Engine) -> None:
    # RFC 9110 9.1: a general-purpose server MUST support HEAD. FastAPI's GET routes answered it
    # 405 (`Allow: GET`), so `curl -I` and uptime probes that send HEAD saw the gateway as broken.
    job_id = insert_running_job(engine, gateway.client_id)
    signed = {"X-Signature": gateway.sign(job_id)}
    for path, headers in (("/health", {}), (f"/api/v1/batch-status/{job_id}", signed), ("/openapi.json", {})):
        got = httpx2.get(f"{gateway.url}{path}", headers=headers, timeout=10)
        head = httpx2.head(f"{gateway.url}{path}", headers=headers, timeout=10)
        assert head.status_code == got.status_code == 200, (path, head.status_code, head.text)
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
    unsigned = httpx2.head(f"{gateway.url}/api/v1/batch-status/{job_id}", timeout=10)
    assert unsigned.status_code == 401 and unsigned.content == b""
    text = httpx2.get(f"{gateway.ops_url}/metrics").text
    assert 'lotlens_http_requests_total{method="HEAD",route="/health",status="200"} 1.0' in text


def test_no_page_on_the_consoles_origin_loads_scripts_from_elsewhere(gateway: Gateway) -> None:
    """FastAPI's /docs and /redoc load Swagger UI and Redoc from a CDN (floating versions, no
    integrity check, no CSP) on the origin where the console keeps the client's key in
    sessionStorage: a CDN script there could read it. The document itself stays at /openapi.json."""
    for page in ("/docs", "/redoc"):
        answer = httpx2.get(f"{gateway.url}{page}")
        assert answer.status_code == 404 and answer.json()["code"] == "NOT_FOUND", page
    assert httpx2.get(f"{gateway.url}/openapi.json").json()["info"]["title"] == "LotLens gateway"
    unsigned = httpx2.get(f"{gateway.url}/api/v1/batch-status/some-job")
    assert unsigned.headers["x-content-type-options"] == "nosniff"


# What API.md lists for `GET /health`: the API port answers these and nothing more.
CONTRACT_HEALTH_FIELDS = {"status", "service", "timestamp", "version", "database", "background_worker"}


def test_the_api_port_serves_no_metrics_and_health_only_with_the_contracts_fields(gateway: Gateway) -> None:
    # Unsigned, anyone reaching the API read the business volume, per-route counts, the outbox
    # backlog and the process's memory on /metrics, and on /health the consumer groups' names and
    # whether the service's OpenAI key was refused.
    assert gateway.submit(make_lots(2)).status_code == 201
    metrics = httpx2.get(f"{gateway.url}/metrics")
    assert metrics.status_code == 404, metrics.text[:300]
    assert "generation_requests_total" not in metrics.text
    for probe in ("/livez", "/readyz"):
        assert httpx2.get(f"{gateway.url}{probe}").status_code == 404, probe
    health = httpx2.get(f"{gateway.url}/health")
    assert health.status_code == 200
    assert set(health.json()) == CONTRACT_HEALTH_FIELDS, health.json()


def test_the_operations_port_serves_metrics_probes_and_the_detailed_health(gateway: Gateway) -> None:
    assert gateway.submit(make_lots(2)).status_code == 201
    metrics = httpx2.get(f"{gateway.ops_url}/metrics")
    assert metrics.status_code == 200
    assert 'generation_requests_total{mode="batch"} 1.0' in metrics.text
    assert "lotlens_outbox_backlog_events" in metrics.text
    health = httpx2.get(f"{gateway.ops_url}/health", timeout=30)
    assert health.status_code == 200
    assert {"kafka", "consumer_groups", "openai"} | CONTRACT_HEALTH_FIELDS <= set(health.json())
    live = httpx2.get(f"{gateway.ops_url}/livez", timeout=5)
    assert live.status_code == 200 and live.json()["status"] == "alive", live.text
    ready = httpx2.get(f"{gateway.ops_url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["checks"] == {"serving": "ok"}, ready.text


def test_answers_name_no_server_software_and_redirect_only_within_the_origin(gateway: Gateway) -> None:
    """Every answer said `server: uvicorn`; `GET /console` with `Host: evil.example` was redirected
    to `http://evil.example/console/` (Starlette's slash redirect, built from the Host header)."""
    for path in ("/livez", "/api/v1/batch-jobs", "/console/", "/no-such-page"):
        answer = httpx2.get(f"{gateway.url}{path}")
        assert "server" not in answer.headers, (path, answer.headers)
        assert "date" in answer.headers  # RFC 9110 6.6.1: an origin server with a clock sends one
    bare = httpx2.get(f"{gateway.url}/console", headers={"Host": "evil.example"})
    assert (bare.status_code, bare.headers["location"]) == (307, "/console/")
    assert "server" not in bare.headers
    for path in ("/livez/", "/api/v1/batch-jobs/", "/console/console.js/"):
        slashed = httpx2.get(f"{gateway.url}{path}", headers={"Host": "evil.example"})
        assert "evil.example" not in slashed.headers.get("location", ""), path
    assert httpx2.get(f"{gateway.url}/console/").text.startswith("<!doctype html>")
