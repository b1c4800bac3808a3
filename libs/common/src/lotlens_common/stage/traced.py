"""Spans for a stage's batch work, continuing the traces of the jobs whose lots it carries."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.trace import SpanKind

from lotlens_common import tracing
from lotlens_common.stage.work import LotWork


@contextmanager
def lots_span(name: str, lots: Sequence[LotWork[Any]], shard_id: str) -> Iterator[None]:
    """A span over work on `lots`: a child of the first job's trace and linked to the others' (a
    batch may mix jobs); what is published inside for a lot continues its own job's trace."""
    if not tracing.enabled():
        yield
        return
    contexts = tracing.contexts_of({lot.job_id: lot.work.trace for lot in lots})
    parents = list(contexts.values())
    with tracing.span(name, parent=parents[0] if parents else None, links=parents[1:],
                      attributes={"lotlens.shard_id": shard_id, "lotlens.lots": len(lots)}), \
            tracing.job_contexts(contexts):
        yield


def openai_call(operation: str, **attributes: str) -> tracing.SpanScope:
    """A client span around one call to OpenAI's API (`files.create`, `batches.create`, ...)."""
    return tracing.span(f"openai {operation}", SpanKind.CLIENT,
                        attributes={"rpc.system": "openai", "rpc.method": operation, **attributes})
