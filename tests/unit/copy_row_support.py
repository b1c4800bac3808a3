"""The reference COPY escaping the fast-path tests hold `copy_row` to, and text that is hard to
escape (`test_copy_row_fast_path.py`, `stage/test_arrival_rows.py`)."""

from __future__ import annotations

from collections.abc import Iterable


def reference_copy_row(fields: Iterable[str | bytes | None]) -> bytes:
    """The escaping `copy_row` did before its whole-line fast path."""
    return b"\t".join([b"\\N" if field is None else _reference_field(field) for field in fields]) + b"\n"


def _reference_field(field: str | bytes) -> bytes:
    value = field if isinstance(field, bytes) else field.encode()
    return value.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")


PIECES = ["job-0f3a", "bench-1a2b-000042", "42", "2019 Toyota Camry, front collision", '["http://x/1.png"]',
          "<p>[de] Standin vision: 5 image(s) reviewed.</p>", "Передний бампер", "邊長見氣", "é", "",
          "\\", "\\N", "N", "\t", "\n", "\r", "\r\n", "\\t", "\x00", " ", "\v", "\f", "\x1c",
          "\u2028", "\x85"]
