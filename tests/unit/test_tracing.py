"""Trace context through the envelope, the producer and the consumer loop (an in-memory SDK, no broker):
what a handler publishes for a job continues that job's trace, even in a batch mixing jobs."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from lotlens_common import tracing
from lotlens_common.envelope import Envelope, decode, encode
from lotlens_common.events import JobCancelled
from lotlens_common.stage.traced import lots_span
from lotlens_common.stage.work import LotWork, VisionWork
from tests.events import RecordingProducer
from tests.spans import recording_spans
from tests.unit.consumer_fakes import TOPICS, FakeMessage, run


@pytest.fixture()
def spans() -> Iterator[InMemorySpanExporter]:
    with recording_spans() as exporter:
        yield exporter


def cancelled(job_id: str, trace: dict[str, str] | None = None) -> Envelope:
    return Envelope(event=JobCancelled(job_id=job_id, cancelled_at="2026-01-01T00:00:00Z"),
                    client_id="c", trace=trace or {})


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def parent_of(carrier: dict[str, str]) -> tuple[int, int]:
    """(trace id, span id) a W3C carrier names."""
    _, trace_id, span_id, _ = carrier["traceparent"].split("-")
    return int(trace_id, 16), int(span_id, 16)


def test_off_by_default_publishing_adds_no_trace_context() -> None:
    producer = RecordingProducer()
    producer.publish("t", cancelled("job-1", {"x-request-id": "r"}))
    _, value, headers = producer.sent[0]
    assert "traceparent" not in headers
    assert decode(value or b"").trace == {"x-request-id": "r"}
    assert not tracing.wanted({}) and tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"})


def test_a_published_event_carries_its_producer_span_in_headers_and_envelope(
        spans: InMemorySpanExporter) -> None:
    producer = RecordingProducer()
    with tracing.span("request") as request:
        assert request is not None
        producer.publish(TOPICS.vision, cancelled("job-1", {"x-request-id": "r"}))
    publish, = named(spans, f"{TOPICS.vision} publish")
    assert publish.kind is SpanKind.PRODUCER
    assert publish.parent is not None and publish.parent.span_id == request.get_span_context().span_id
    _, value, headers = producer.sent[0]
    carried = decode(value or b"").trace
    assert headers["traceparent"].decode() == carried["traceparent"]
    assert carried["x-request-id"] == "r", "the caller's own trace headers are kept"
    assert parent_of(carried) == (publish.context.trace_id, publish.context.span_id)


def test_an_outbox_event_is_published_under_the_request_that_wrote_it(spans: InMemorySpanExporter) -> None:
    with tracing.span("request"):
        stored = encode(cancelled("job-1", tracing.inject({})))  # the outbox keeps this, the request ends
    request, = named(spans, "request")
    producer = RecordingProducer()
    producer.publish_encoded(TOPICS.submissions, b"job-1", stored)
    publish, = named(spans, f"{TOPICS.submissions} publish")
    assert publish.parent is not None and publish.parent.span_id == request.context.span_id
    _, _, headers = producer.sent[0]
    assert parent_of({"traceparent": headers["traceparent"].decode()})[1] == publish.context.span_id


def test_the_consumer_continues_each_jobs_trace_in_a_batch_mixing_jobs(spans: InMemorySpanExporter) -> None:
    upstream = RecordingProducer()
    for job_id in ("job-a", "job-b"):
        with tracing.span(f"request {job_id}"):
            upstream.publish(TOPICS.submissions, cancelled(job_id))
    messages = [FakeMessage(n, value or b"", [(k, v) for k, v in headers.items()])
                for n, (_, value, headers) in enumerate(upstream.sent)]
    downstream = RecordingProducer()
    seen: list[int] = []

    def handler(envelopes: Sequence[Envelope]) -> None:
        seen.append(len(envelopes))
        for envelope in envelopes:
            downstream.publish(TOPICS.completions, cancelled(envelope.job_id))

    run([messages], handler)
    assert seen == [2]
    requests = {span.name.split()[-1]: span for span in spans.get_finished_spans()
                if span.name.startswith("request")}
    processes = {span.attributes["lotlens.job_id"]: span
                 for span in named(spans, f"{TOPICS.submissions} process") if span.attributes}
    batch, = named(spans, "g handle")
    assert {link.context.span_id for link in batch.links} == {p.context.span_id for p in processes.values()}
    for _, value, _ in downstream.sent:
        envelope = decode(value or b"")
        job_trace = requests[envelope.job_id].context.trace_id
        assert processes[envelope.job_id].kind is SpanKind.CONSUMER
        assert processes[envelope.job_id].context.trace_id == job_trace
        assert parent_of(envelope.trace)[0] == job_trace, "the job's event left its trace"


def test_a_message_without_trace_headers_continues_the_trace_in_its_envelope(
        spans: InMemorySpanExporter) -> None:
    with tracing.span("request"):
        value = encode(cancelled("job-1", tracing.inject({})))
    request, = named(spans, "request")
    run([[FakeMessage(0, value)]], lambda _envelopes: None)
    process, = named(spans, f"{TOPICS.submissions} process")
    assert process.context.trace_id == request.context.trace_id


def test_a_batch_of_lots_continues_their_jobs_traces(spans: InMemorySpanExporter) -> None:
    carriers = {}
    for job_id in ("job-a", "job-b"):
        with tracing.span(f"request {job_id}"):
            carriers[job_id] = tracing.inject({})
    lots = [LotWork(job_id, f"{job_id}-lot", "c", 1, 0,
                    VisionWork(image_urls=(), languages=("en",), trace=carriers[job_id]))
            for job_id in ("job-a", "job-b")]
    producer = RecordingProducer()
    with lots_span("vision batch collect", lots, "shard-1"):
        for lot in lots:
            producer.publish(TOPICS.vision, cancelled(lot.job_id))
    collect, = named(spans, "vision batch collect")
    assert collect.context.trace_id == parent_of(carriers["job-a"])[0]
    assert [link.context.trace_id for link in collect.links] == [parent_of(carriers["job-b"])[0]]
    for _, value, _ in producer.sent:
        envelope = decode(value or b"")
        assert parent_of(envelope.trace)[0] == parent_of(carriers[envelope.job_id])[0]
    stored = VisionWork.model_validate_json(lots[1].work.model_dump_json())
    assert stored.trace == carriers["job-b"], "the work row keeps the job's trace context"
    assert orjson.loads(VisionWork(image_urls=(), languages=()).model_dump_json())["trace"] == {}


def test_threads_do_not_share_job_contexts(spans: InMemorySpanExporter) -> None:
    with tracing.span("request"):
        carrier = tracing.inject({})
    found: list[object] = []
    with tracing.job_contexts(tracing.contexts_of({"job-1": carrier})):
        assert tracing.job_context("job-1") is not None
        thread = threading.Thread(target=lambda: found.append(tracing.job_context("job-1")))
        thread.start()
        thread.join()
    assert found == [None]
    assert tracing.job_context("job-1") is None
