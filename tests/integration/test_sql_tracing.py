"""SQL statements become spans on a real PostgreSQL, inside a trace only, and failures are marked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import Engine, text
from sqlalchemy.exc import DataError, ProgrammingError

from lotlens_common import tracing
from lotlens_common.db import make_engine
from lotlens_common.settings import DatabaseSettings
from tests.conftest import Infra
from tests.spans import recording_spans


@pytest.fixture()
def spans() -> Iterator[InMemorySpanExporter]:
    with recording_spans() as exporter:
        yield exporter


@pytest.fixture()
def traced_engine(infra: Infra, spans: InMemorySpanExporter) -> Iterator[Engine]:
    engine = make_engine(DatabaseSettings(DATABASE_URL=infra.database_url), "tests")
    yield engine
    engine.dispose()


def test_statements_inside_a_trace_are_its_children_and_others_are_not_recorded(
        traced_engine: Engine, spans: InMemorySpanExporter) -> None:
    with traced_engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # a background poll: no trace, no span
        with tracing.span("request") as request:
            assert request is not None
            conn.execute(text("SELECT 2"))
            with pytest.raises(ProgrammingError):
                conn.execute(text("SELECT * FROM no_such_table"))
    statements = [span for span in spans.get_finished_spans() if span.kind is SpanKind.CLIENT]
    assert [span.attributes and span.attributes["db.query.text"] for span in statements] == [
        "SELECT 2", "SELECT * FROM no_such_table"]
    assert all(span.parent is not None and span.parent.span_id == request.get_span_context().span_id
               for span in statements)
    assert statements[1].status.status_code is StatusCode.ERROR


def test_an_engine_made_with_tracing_off_records_nothing(infra: Infra) -> None:
    engine = make_engine(DatabaseSettings(DATABASE_URL=infra.database_url), "tests")
    try:
        # Switched on after the engine was made.
        with recording_spans() as exporter, tracing.span("request"), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    assert [span.name for span in exporter.get_finished_spans()] == ["request"]


def test_a_failed_statement_quoting_a_signed_url_is_traced_without_its_signature(
        traced_engine: Engine, spans: InMemorySpanExporter) -> None:
    # PostgreSQL quotes the value it refused, here a customer's signed image URL.
    with traced_engine.connect() as conn, pytest.raises(DataError), tracing.span("request"):
        conn.execute(text("SELECT CAST(:url AS integer)"),
                      {"url": "https://b.example/a.jpg?X-Amz-Signature=S3CRET"})
    statement, request = spans.get_finished_spans()
    for span in (statement, request):
        assert span.status.status_code is StatusCode.ERROR
        exported = f"{span.status.description} {[dict(event.attributes or {}) for event in span.events]}"
        assert "S3CRET" not in exported and "https://b.example/a.jpg" in exported, exported
