"""One trace per job: the five services export their spans by OTLP/HTTP to a receiver in this test,
and one job's trace runs from the gateway's request to the webhook dispatcher."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from sqlalchemy import Engine

from lotlens_common.settings import TopicSettings
from tests.conftest import Infra, new_id
from tests.e2e.harness import SERVICES, Stack
from tests.e2e.workload import cars
from tests.polling import wait_for
from tests.seeds import seed_client_class
from tests.servers import WebhookReceiver, serve

pytestmark = pytest.mark.e2e

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5  # the OTLP span kinds


@dataclass(frozen=True)
class ExportedSpan:
    """The parts of an exported span the assertions read."""

    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, str]
    links: tuple[str, ...]


@dataclass
class Collector:
    """Every span the services exported so far."""

    url: str = ""
    spans: list[ExportedSpan] = field(default_factory=list)

    def trace(self, trace_id: str) -> list[ExportedSpan]:
        return [span for span in list(self.spans) if span.trace_id == trace_id]


@contextmanager
def otlp_receiver() -> Iterator[Collector]:
    """An OTLP/HTTP trace receiver (protobuf, as the SDK's exporter sends) on a free loopback port."""
    collector = Collector()

    class Traces(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = ExportTraceServiceRequest()
            request.ParseFromString(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    collector.spans += [ExportedSpan(
                        resource.get("service.name", ""), span.name, span.kind, span.trace_id.hex(),
                        span.span_id.hex(), span.parent_span_id.hex(),
                        {a.key: a.value.string_value for a in span.attributes},
                        tuple(link.trace_id.hex() for link in span.links)) for span in scope_spans.spans]
            body = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            """Quiet: the test reads the requests it recorded, not a log."""

    with serve(Traces) as url:
        collector.url = url
        yield collector


@pytest.fixture()
def collector() -> Iterator[Collector]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture()
def traced(infra: Infra, stack_engine: Engine, topics: TopicSettings, tmp_path: Path,
           collector: Collector) -> Iterator[Stack]:
    """A stack whose services export spans to `collector` (the standard OTEL_* variables)."""
    stack = Stack(infra=infra, topics=topics, logs=tmp_path,
                  database_url=stack_engine.url.render_as_string(hide_password=False),
                  extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "200"})
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def test_one_trace_spans_the_five_services_for_a_job(
        traced: Stack, collector: Collector, images: str, receiver: WebhookReceiver) -> None:
    client = seed_client_class()(traced.url, traced.client_key)
    job_id, error = client.batch_generate(cars(images, 2, new_id("trace")), languages=["en", "de"],
                                          webhook_url=f"{receiver.url}/hooks")
    assert error is None, error
    wait_for(lambda: receiver.received, "the job's webhook", timeout_s=120, every_s=0.1)

    def job_trace() -> list[ExportedSpan]:
        submitted = [span for span in list(collector.spans) if span.service == "gateway"
                     and span.kind == PRODUCER and span.attributes.get("lotlens.job_id") == job_id]
        return collector.trace(submitted[0].trace_id) if submitted else []

    failures: list[AssertionError] = []

    def whole() -> bool:
        try:
            check_trace(job_trace(), job_id)
        except AssertionError as failure:
            failures[:] = [failure]
            return False
        return True

    # Spans arrive as each process's exporter sends them (every 0.2 s); the collector is in this
    # process: a look costs nothing.
    wait_for(whole, lambda: f"the job's whole trace ({failures[0]})", timeout_s=90, every_s=0.2)


def check_trace(spans: list[ExportedSpan], job_id: str) -> None:
    """One trace from the gateway's request to the webhook POST, through every service."""
    assert {span.service for span in spans} == set(SERVICES), \
        sorted({(s.service, s.name) for s in spans})

    ids = {span.span_id for span in spans}
    roots = [span for span in spans if span.parent_id not in ids]
    assert [(root.service, root.kind) for root in roots] == [("gateway", SERVER)], \
        "the job's trace has one root, the gateway's request"
    assert roots[0].attributes.get("http.route") == "/api/v1/generate-descriptions"

    def kinds(service: str) -> set[int]:
        return {span.kind for span in spans if span.service == service}

    for service in ("vision-batcher", "translator", "result-store"):
        assert {CONSUMER, PRODUCER} <= kinds(service), (service, kinds(service))
    assert {CONSUMER, CLIENT} <= kinds("webhook-dispatcher")
    posts = [span for span in spans if span.name == "webhook POST"]
    assert posts and all(span.attributes.get("lotlens.job_id") == job_id for span in posts)
    openai_calls = {(span.service, span.name) for span in spans if span.kind == CLIENT}
    for stage in ("vision-batcher", "translator"):
        # The status polls (GET /v1/batches/{id}) too: they run outside any job's span and are
        # hung on the job's trace from the context the shard's lots keep.
        expected = {(stage, "openai batches.create"), (stage, "openai batches.retrieve"),
                    (stage, "openai files.content")}
        assert expected <= openai_calls, openai_calls
    polls = [span for span in spans if span.name == "openai batches.retrieve"]
    assert all(span.attributes.get("lotlens.batch_id") for span in polls)
    statements = {span.service for span in spans if span.attributes.get("db.system.name") == "postgresql"}
    assert set(SERVICES) <= statements, statements
    completed = [span for span in spans if span.service == "result-store" and span.kind == PRODUCER
                 and span.attributes.get("lotlens.event_type") == "JobCompleted"]
    assert completed, "JobCompleted left the job's trace"
