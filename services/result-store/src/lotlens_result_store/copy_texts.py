"""A batch's description rows in COPY's text format, written a batch at a time.

`lotlens_common.row_sets.copy_row` writes one row; a translation batch has three rows a lot (one a
language), and written row by row they cost 1.7 us a lot of the stand-in's one-line texts and 5.0
of texts with a newline (models write HTML across lines), which `copy_row` escapes field by field.
Here the whole batch is joined and checked at once, and escaped a column at a time where a text
needs it: 0.5 and 2.4 us a lot (the rows alone; a translation batch through the handler, 6.5-7.4 ->
5.2-5.8 and 10.1-11.3 -> 8.1-8.7 us a lot). The bytes are `copy_row`'s, row after row
(tests/unit/test_result_store_copy_texts.py holds them to it).
"""

from __future__ import annotations

from collections.abc import Sequence

from lotlens_common.row_sets import copy_row

_NUL = "\0"  # no text PostgreSQL stores holds one: it parts the texts of a column while escaped


def copy_texts(rows: Sequence[tuple[str, ...]], width: int) -> bytes:
    """`b"".join(map(copy_row, rows))` for rows of `width` texts, none of them NULL."""
    if not rows:
        return b""
    lines = "\n".join(map("\t".join, rows)) + "\n"
    # Nothing to escape (the usual batch): every tab and newline is one the join put there.
    if "\\" not in lines and "\r" not in lines and lines.count("\t") == (width - 1) * len(rows) \
            and lines.count("\n") == len(rows):
        return lines.encode()
    columns: list[list[str]] = []
    for column in zip(*rows, strict=True):
        joined = _NUL.join(column)
        if joined.count(_NUL) != len(column) - 1:  # a text with a NUL, which COPY refuses
            return b"".join(map(copy_row, rows))
        # As `copy_row` escapes a field: the backslash first, as the others bring one.
        columns.append(joined.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                       .replace("\r", "\\r").split(_NUL))
    return ("\n".join(map("\t".join, zip(*columns, strict=True))) + "\n").encode()
