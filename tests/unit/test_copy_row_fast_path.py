"""`copy_row` writes every row byte for byte as the field-by-field escaping it replaced (kept in
copy_row_support.py as the reference) does: seeded rows of plain text, NULLs, bytes, and the
characters COPY's text format escapes (backslash, tab, newline, carriage return), a NULL marker's
look-alikes among them."""

from __future__ import annotations

import random

import pytest

from lotlens_common.row_sets import copy_row
from tests.unit.copy_row_support import PIECES, reference_copy_row


def random_field(rng: random.Random) -> str | bytes | None:
    roll = rng.random()
    if roll < 0.15:
        return None
    text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 4)))
    return text.encode() if roll > 0.9 else text


@pytest.mark.parametrize("seed", range(8))
def test_random_rows_are_written_as_the_field_by_field_escaping_wrote_them(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(3000):
        row = [random_field(rng) for _ in range(rng.randint(0, 7))]
        assert copy_row(row) == reference_copy_row(row), row
        assert copy_row(iter(row)) == reference_copy_row(row), row


@pytest.mark.parametrize("row", [
    (), (None,), ("",), ("", ""), ("\\N",), (None, "\\"), ("a\\", None), ("a", "b\tc"), ("a\nb",),
    ("a\rb",), (b"x\ty", "z"), (b"", None), ("tab\t", None, "x"),
])
def test_edge_rows_are_written_as_the_field_by_field_escaping_wrote_them(
        row: tuple[str | bytes | None, ...]) -> None:
    assert copy_row(row) == reference_copy_row(row)


def test_text_that_cannot_be_utf8_fails_as_it_did() -> None:
    with pytest.raises(UnicodeEncodeError):
        reference_copy_row(("\ud800",))
    with pytest.raises(UnicodeEncodeError):
        copy_row(("\ud800",))
