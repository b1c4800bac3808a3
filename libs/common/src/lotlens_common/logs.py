"""Structured logs: one JSON object per line on stderr, for LotLens's own records and everyone else's.

The ids of the job (and batch, shard, delivery) a line is about come from the record's `extra` or,
failing that, from the context bound with `log_context` / `bind_log_context`: set once where the
work on a job starts, they reach every line logged below it, including in threads started with
the context copied (Starlette's thread pool, asyncio tasks).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from lotlens_common.redaction import redacted

_IDS = ("job_id", "batch_id", "shard_id", "delivery_id")
_CONTEXT: ContextVar[dict[str, str]] = ContextVar("lotlens_log_context", default={})  # noqa: B039 - never mutated
# librdkafka's own lines (connection trouble, broker changes), routed through Python logging by
# the `logger` client setting so that they are JSON like the rest.
KAFKA_LOGGER = logging.getLogger("librdkafka")
# What changes between two reports of the same failure: "(after 0ms in state CONNECT, 3
# identical error(s) suppressed)".
_ATTEMPT_DETAILS = re.compile(r"\s*\(after \d+ms in state \w+(, \d+ identical error\(s\) suppressed)?\)")
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
            # A message quoting an exception's text (or an OpenAI answer) can hold a signed image
            # URL or an Authorization value, as a traceback can.
            "msg": redacted(record.getMessage()),
        }
        entry.update(_CONTEXT.get())
        for key in (*_IDS, "service"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            # A traceback prints every chained cause's text, which an HTTP library's can fill
            # with the request's Authorization value or a signed URL.
            entry["exc"] = redacted(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class RepeatedLines(logging.Filter):
    """Lets a line through when it first comes, then the same line at most once every `every_s`,
    with the count of those held back since.

    librdkafka reports a refused connection at each try, about 20 times a second for a consumer
    group: a Kafka outage wrote some 1,200 lines a minute per service, burying every other line and
    filling the log store. Repeats held back after the last line written are not counted anywhere:
    the failure's first line is in the log, and its end shows in the service's own lines.
    """

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_lines: int = 1000) -> None:
        super().__init__()
        self._every_s, self._clock, self._max_lines = every_s, clock, max_lines
        self._lock = threading.Lock()
        self._seen: dict[tuple[int, str], tuple[float, int]] = {}  # line -> (last written, held since)

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the record is written (then with the count of repeats held back, if any)."""
        message = record.getMessage()
        line = (record.levelno, _ATTEMPT_DETAILS.sub("", message))
        now = self._clock()
        with self._lock:
            written, held = self._seen.get(line, (None, 0))
            if written is not None and now - written < self._every_s:
                self._seen[line] = (written, held + 1)
                return False
            if len(self._seen) >= self._max_lines:
                self._seen.clear()  # lines that vary without end: forget them rather than grow
            self._seen[line] = (now, 0)
        if held and written is not None:
            record.msg, record.args = f"{message} ({held} more like it in the last {now - written:.0f} s)", ()
        return True


KAFKA_LOGGER.addFilter(RepeatedLines())


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
