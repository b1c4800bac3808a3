"""SQL statements as client spans, recorded only inside a trace (background polls stay silent)."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext

from lotlens_common import tracing
from lotlens_common.redaction import redacted

_KEY = "lotlens_sql_span"
STATEMENT_CHARS = 500


def trace_statements(engine: Engine) -> None:
    """Record each statement `engine` runs under a span as that span's child."""
    event.listen(engine, "before_cursor_execute", _before)
    event.listen(engine, "after_cursor_execute", _after)
    event.listen(engine, "handle_error", _failed)


def _before(_conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool) -> None:
    if context is None or not trace.get_current_span().get_span_context().is_valid:
        return
    operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
    # Not made current and ended by `_after` (or `_failed`), when the statement is done.
    setattr(context, _KEY, tracing.start_child(operation, SpanKind.CLIENT, {
        "db.system.name": "postgresql", "db.operation.name": operation,
        "db.query.text": statement[:STATEMENT_CHARS]}))


def _after(_conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool) -> None:
    span = getattr(context, _KEY, None)
    if span is not None:
        span.end()


def _failed(exception_context: ExceptionContext) -> None:
    span = getattr(exception_context.execution_context, _KEY, None)
    if span is not None:
        # PostgreSQL quotes a value it refuses, a customer's signed image URL as well; cut after
        # redacting, or a cut URL could lose the `?` that marks its query.
        span.set_status(StatusCode.ERROR, redacted(str(exception_context.original_exception))[:200])
        span.end()
