"""One trace per job: OpenTelemetry spans, exported by OTLP when the standard `OTEL_*` variables ask.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
`OTEL_TRACES_EXPORTER=otlp` is set: then every helper here returns at once, so the hot paths pay
one boolean test. The job's W3C trace context travels in Kafka headers and in the envelope's
`trace` field (which outlives the message: the gateway's outbox, the stages' work rows), and
`job_contexts` maps the jobs a thread is working on to their contexts, so an event published for
a job continues that job's trace even when a batch mixes jobs.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, StatusCode, Tracer

from lotlens_common.redaction import redacted

Carrier = Mapping[str, str]
TRACE_KEYS = ("traceparent", "tracestate")

_tracer: Tracer | None = None
_jobs: ContextVar[Mapping[str, Context] | None] = ContextVar("lotlens_job_contexts", default=None)


def wanted(env: Mapping[str, str] = os.environ) -> bool:
    """True when the standard OpenTelemetry variables ask for trace export."""
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none" or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return exporter == "otlp" or bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                                      or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup(service_name: str) -> None:
    """Install the OTLP exporter for this process if `wanted`; a no-op otherwise."""
    global _tracer
    if not wanted():
        return
    # Imported here: a process with tracing off never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME still wins; OTEL_RESOURCE_ATTRIBUTES adds to the resource.
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("lotlens")


def enabled() -> bool:
    """Whether spans are recorded in this process."""
    return _tracer is not None


def use(tracer: Tracer | None) -> None:
    """Record spans with `tracer` (tests pass an in-memory SDK's), or stop with None."""
    global _tracer
    _tracer = tracer


def extract(carrier: Carrier | None) -> Context | None:
    """The context a carrier names, or None if it names none."""
    if not carrier or "traceparent" not in carrier:
        return None
    return propagate.extract(dict(carrier))


def inject(carrier: Carrier, parent: Context | None = None) -> dict[str, str]:
    """`carrier` with the current (or `parent`) span's W3C context written over its own."""
    out = dict(carrier)
    if _tracer is not None:
        propagate.inject(out, context=parent)
    return out


def job_context(job_id: str) -> Context | None:
    """The context of the job's trace on this thread (see `job_contexts`), if any."""
    jobs = _jobs.get()
    return None if jobs is None else jobs.get(job_id)


def job_carrier(job_id: str) -> dict[str, str]:
    """The W3C carrier continuing the job's trace, to keep beside work done later ({} if off)."""
    if _tracer is None:
        return {}
    return inject({}, job_context(job_id))


def contexts_of(carriers: Mapping[str, Carrier]) -> dict[str, Context]:
    """The contexts of jobs' carriers ({} if off or none carries one)."""
    if _tracer is None:
        return {}
    return {job_id: ctx for job_id, carrier in carriers.items() if (ctx := extract(carrier)) is not None}


@contextmanager
def job_contexts(contexts: Mapping[str, Context]) -> Iterator[None]:
    """Within the block, what is published for each job continues that job's trace."""
    if not contexts:
        yield
        return
    token = _jobs.set({**(_jobs.get() or {}), **contexts})
    try:
        yield
    finally:
        _jobs.reset(token)


@dataclass(frozen=True)
class Consumed:
    """One consumed event, as far as tracing cares."""

    topic: str
    job_id: str
    event_type: str
    carrier: Carrier


@contextmanager
def consuming(group: str, events: Sequence[Consumed]) -> Iterator[None]:
    """A consumer span per event (child of the context it carries) around the handling of a batch;
    the handler runs under the event's span (or a batch span linked to all of them), and what it
    publishes for a job continues that job's trace."""
    if _tracer is None or not events:
        yield
        return
    spans = [_tracer.start_span(f"{event.topic} process", context=extract(event.carrier),
                                kind=SpanKind.CONSUMER,
                                attributes={**messaging(event.topic, event.job_id, event.event_type),
                                            "messaging.consumer.group.name": group})
             for event in events]
    contexts = {event.job_id: trace.set_span_in_context(current)
                for event, current in zip(events, spans, strict=True)}
    try:
        if len(spans) == 1:
            with trace.use_span(spans[0], end_on_exit=False, record_exception=False,
                                set_status_on_exception=False), job_contexts(contexts):
                yield
        else:
            count = {"messaging.batch.message_count": len(spans)}
            with span(f"{group} handle", links=contexts.values(), attributes=count), job_contexts(contexts):
                yield
    except BaseException as exc:
        for current in spans:
            failed(current, exc)
        raise
    finally:
        for current in spans:
            current.end()


def messaging(topic: str, job_id: str, event_type: str) -> dict[str, str | int]:
    """The span attributes naming a Kafka message of a job."""
    return {"messaging.system": "kafka", "messaging.destination.name": topic, "lotlens.job_id": job_id,
            "lotlens.event_type": event_type}


SpanScope = AbstractContextManager[Span | None]


@contextmanager
def span(name: str, kind: SpanKind = SpanKind.INTERNAL, parent: Context | None = None,
         links: Iterable[Context] = (), attributes: Mapping[str, str | int] | None = None,
         ) -> Iterator[Span | None]:
    """A span made current for the block (child of `parent`, else of the current span); None if off."""
    if _tracer is None:
        yield None
        return
    span_links = [Link(trace.get_current_span(ctx).get_span_context()) for ctx in links]
    # The SDK's own recording would export the error's text as it is: `failed` records it.
    with _tracer.start_as_current_span(name, context=parent, kind=kind, links=span_links,
                                       attributes=dict(attributes or {}), record_exception=False,
                                       set_status_on_exception=False) as current:
        try:
            yield current
        except Exception as exc:  # as the SDK: a GeneratorExit or KeyboardInterrupt is no error
            failed(current, exc)
            raise


def failed(current: Span, exc: BaseException) -> None:
    """Mark `current` failed by `exc`: an exception event and an ERROR status, as the SDK records
    them, but with credentials taken out of the message and the stacktrace (whose chained causes
    can quote an Authorization value or a customer's signed image URL)."""
    current.record_exception(exc, attributes={
        "exception.message": redacted(str(exc)),
        "exception.stacktrace": redacted("".join(traceback.format_exception(exc)))})
    current.set_status(StatusCode.ERROR, redacted(f"{type(exc).__name__}: {exc}"))



def start_child(name: str, kind: SpanKind, attributes: Mapping[str, str | int]) -> Span | None:
    """A child of the current span, neither made current nor ended (the caller ends it); None if off."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, kind=kind, attributes=dict(attributes))
