"""Spans recorded in memory while tracing is switched on, for tests that assert on them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lotlens_common import tracing


@contextmanager
def recording_spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, every finished span kept in the exporter; off again afterwards."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider.get_tracer("test"))
    try:
        yield exporter
    finally:
        tracing.use(None)
