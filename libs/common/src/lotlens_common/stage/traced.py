"""Spans for a stage's batch work, continuing the traces of the jobs whose lots it carries."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from lotlens_common import tracing
from lotlens_common.stage.ports import Shard, WorkStore
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


def openai_call(operation: str, attributes: Mapping[str, str] | None = None,
                parent: Context | None = None) -> tracing.SpanScope:
    """A client span around one call to OpenAI's API (`files.create`, `batches.create`, ...), a
    child of `parent` if given, else of the current span."""
    return tracing.span(f"openai {operation}", SpanKind.CLIENT, parent=parent,
                        attributes={"rpc.system": "openai", "rpc.method": operation, **(attributes or {})})


def shard_context(store: WorkStore[Any], shard: Shard) -> Context | None:
    """The shard's job's trace, to hang the batch's status polls on (None when tracing is off).

    A poll runs outside any job's span (one loop watches every batch); the context comes from
    what the shard's lots keep, read only when spans are recorded."""
    if not tracing.enabled():
        return None
    return tracing.extract(store.shard_trace(shard.shard_id))
