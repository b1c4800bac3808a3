"""A batch's status polls and its file download are spans in its job's trace (in-memory SDK)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from lotlens_common import tracing
from tests.spans import recording_spans
from tests.unit.stage.conftest import World, lots


@pytest.fixture()
def spans() -> Iterator[InMemorySpanExporter]:
    with recording_spans() as exporter:
        yield exporter


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def test_each_status_poll_and_the_download_continue_the_jobs_trace(world: World,
                                                                   spans: InMemorySpanExporter) -> None:
    with tracing.span("job consumed") as job_span:
        carrier = tracing.inject({})
    assert job_span is not None
    job = job_span.get_span_context()
    world.store.add([lot.with_work(lot.work.model_copy(update={"trace": carrier})) for lot in lots(2)])
    world.batches.finish = None  # running: every round polls it
    world.rounds(3)
    polls = named(spans, "openai batches.retrieve")
    assert len(polls) >= 2
    [event] = world.submitted()
    for poll in polls:
        assert poll.kind == SpanKind.CLIENT and poll.parent is not None
        assert (poll.context.trace_id, poll.parent.span_id) == (job.trace_id, job.span_id)
        assert poll.attributes is not None and poll.attributes["lotlens.batch_id"] == event.batch_id

    world.batches.finish = "completed"
    world.rounds()
    assert len(world.completed()) == 2
    [download] = [span for span in named(spans, "openai files.content")
                  if span.attributes and span.attributes["lotlens.file_key"] == "output_file_id"]
    assert download.context.trace_id == job.trace_id


def test_with_tracing_off_a_poll_records_nothing_and_reads_no_trace(world: World) -> None:
    world.store.add(lots(1))
    world.batches.finish = None
    asked: list[str] = []
    def shard_trace(shard_id: str) -> dict[str, str]:
        asked.append(shard_id)
        return {}

    world.store.shard_trace = shard_trace  # type: ignore[method-assign]
    world.rounds(2)
    assert world.submitted() and asked == []
