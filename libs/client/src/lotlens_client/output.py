"""What `lotlens` prints on stdout: JSON, written so that no stream can refuse it.

A stream whose encoding lacks a character (a Windows console, or output redirected in cp1252,
given Russian descriptions) made the write fail after the request had been carried out, and the
answer, paid for, was lost. Each character the stream's encoding cannot hold is written as its
JSON escape instead (`Ж` as `\\u0416`): the output is still valid JSON with the same strings,
and readable wherever the encoding allows.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import sys
from datetime import datetime
from typing import Any

JSON_ESCAPES = "lotlens-json-escapes"  # the codec error handler below


class ReaderGone(Exception):
    """Whoever read stdout left (`lotlens lots JOB --all | head`)."""


class NotPrinted(Exception):
    """The answer came, but stdout took no more of it (the request was carried out)."""


def _json_escapes(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    # Non-ASCII characters only occur inside JSON strings, where an escape means the same.
    return json.dumps(error.object[error.start:error.end])[1:-1], error.end


codecs.register_error(JSON_ESCAPES, _json_escapes)


def holdable(text: str, encoding: str | None) -> str:
    """JSON `text` with each character `encoding` cannot hold written as its JSON escape."""
    if not encoding or codecs.lookup(encoding).name.startswith("utf-"):
        return text
    return text.encode(encoding, JSON_ESCAPES).decode(encoding)


def printed(text: str) -> None:
    """Write JSON text to stdout; ReaderGone when its reader has left, NotPrinted when it fails."""
    try:
        sys.stdout.write(holdable(text, sys.stdout.encoding))
        sys.stdout.flush()
    except BrokenPipeError as exc:
        raise ReaderGone from exc
    except (OSError, ValueError) as exc:  # a full disk, a closed stream
        raise NotPrinted(f"the request was carried out, but its answer could not be printed: {exc}") from exc


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def as_json(value: Any, indent: int | None = None) -> str:
    """A model (or plain JSON) as JSON text, non-ASCII characters as they are."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.dumps(value, indent=indent, ensure_ascii=False, default=_json_default)


def emit(value: Any) -> None:
    """Print a model (or plain JSON) as indented JSON."""
    printed(as_json(value, indent=2) + "\n")
