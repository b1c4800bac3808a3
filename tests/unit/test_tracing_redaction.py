"""Spans that fail keep the credentials an error quotes out of their exception events and status:
a model error can quote an Authorization value or a customer's signed image URL, as logs already
cannot (`redaction.redacted`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sqlalchemy.exc import OperationalError

from lotlens_common import tracing
from lotlens_common.envelope import Envelope
from lotlens_common.stage.traced import openai_call
from tests.spans import recording_spans
from tests.unit.consumer_fakes import TOPICS, FakeMessage, event, run

KEY = "sk-proj-Zq8v1Xr4Tn6Wm2Lp9Hs3Kd7Fb5Gc0Jy"
SIGNATURE = "S3CRET"


class ModelUnavailable(Exception):
    """Stands for an SDK error whose text quotes the request it failed on."""


def _quoting_error() -> Exception:
    """An error quoting a signed image URL, caused by one quoting the Authorization header."""
    try:
        raise ValueError(f"Illegal header value b'Bearer {KEY}\\n'")
    except ValueError as cause:
        try:
            raise ModelUnavailable(f"could not fetch https://b.example/a.jpg?X-Amz-Signature={SIGNATURE}"
                                   f" (Authorization: Bearer {KEY})") from cause
        except ModelUnavailable as error:
            return error


@pytest.fixture()
def spans() -> Iterator[InMemorySpanExporter]:
    with recording_spans() as exporter:
        yield exporter


def _exported(span: ReadableSpan) -> str:
    """What an exporter sends of a span's failure: its status and its events' attributes."""
    events = [f"{event.name} {dict(event.attributes or {})}" for event in span.events]
    return f"{span.status.description} {events}"


def _assert_failed_without_credentials(span: ReadableSpan) -> None:
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"], "recorded once"
    exported = _exported(span)
    assert KEY not in exported and SIGNATURE not in exported, exported
    assert "https://b.example/a.jpg" in exported, "what failed is still named"
    assert "ModelUnavailable" in exported and "ValueError" in exported, "the causes are still recorded"


def test_a_failed_openai_call_span_records_its_error_without_key_or_signed_url(
        spans: InMemorySpanExporter) -> None:
    with pytest.raises(ModelUnavailable), openai_call("batches.create"):
        raise _quoting_error()
    span, = spans.get_finished_spans()
    _assert_failed_without_credentials(span)
    assert span.status.description is not None and span.status.description.startswith("ModelUnavailable: ")


class _Cancelled(Exception):
    """psycopg2's error for a statement cancelled at its `statement_timeout` (SQLSTATE 57014)."""

    pgcode = "57014"


def test_a_consumer_span_ended_by_a_timed_out_try_records_its_causes_without_credentials(
        spans: InMemorySpanExporter) -> None:
    # A timed-out try ends the round: the error leaves the handling, and the consumer span
    # records it with every chained cause's text.
    def timing_out_after_a_model_error(_envelopes: Sequence[Envelope]) -> None:
        try:
            raise _quoting_error()
        except ModelUnavailable as error:
            raise OperationalError("UPDATE vision_work ...", {}, _Cancelled("canceling statement")) from error

    run([[FakeMessage(0, event(0))]], timing_out_after_a_model_error)
    failed = [span for span in spans.get_finished_spans()
              if span.name == f"{TOPICS.submissions} process" and span.status.status_code is StatusCode.ERROR]
    assert failed, "the timed-out try is on a span"
    for span in failed:
        _assert_failed_without_credentials(span)


def test_a_batch_span_records_its_failure_without_credentials(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ModelUnavailable), tracing.span("vision batch collect"):
        raise _quoting_error()
    span, = spans.get_finished_spans()
    _assert_failed_without_credentials(span)
