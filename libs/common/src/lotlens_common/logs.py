"""Structured logs: one JSON object per line on stderr, for LotLens's own records and everyone else's.

The ids of the job (and batch, shard, delivery) a line is about come from the record's `extra` or,
failing that, from the context bound with `log_context` / `bind_log_context`: set once where the
work on a job starts, they reach every line logged below it, including in threads started with
the context copied (Starlette's thread pool, asyncio tasks).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_IDS = ("job_id", "batch_id", "shard_id", "delivery_id")
_CONTEXT: ContextVar[dict[str, str]] = ContextVar("lotlens_log_context", default={})  # noqa: B039 - never mutated
# librdkafka's own lines (connection trouble, broker changes), routed through Python logging by
# the `logger` client setting so that they are JSON like the rest.
KAFKA_LOGGER = logging.getLogger("librdkafka")
# Third-party HTTP clients log every request at INFO: the OpenAI SDK's alone was most of a
# stage's lines. Their warnings and errors still come through.
_QUIET = ("httpx2", "httpcore2", "openai")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the ids of the job the line is about."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as JSON."""
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_CONTEXT.get())
        for key in (*_IDS, "service"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(level: str) -> None:
    """Structured logs on stderr; third-party request logs only from WARNING up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


def _bound(ids: dict[str, str | None]) -> dict[str, str]:
    return {**_CONTEXT.get(), **{key: value for key, value in ids.items() if value}}


@contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Lines logged inside carry these ids (`job_id`, `batch_id`, ...)."""
    token = _CONTEXT.set(_bound(ids))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind_log_context(**ids: str | None) -> None:
    """Bind ids until the current context ends (an HTTP request's task)."""
    _CONTEXT.set(_bound(ids))
