"""`copy_texts` writes a batch's description rows byte for byte as `copy_row` writes them one by one:
seeded batches of plain text and of the characters COPY's text format escapes, with and without a
NUL (which takes `copy_row` itself), and batches with nothing to escape (the usual one)."""

from __future__ import annotations

import random

import pytest

from lotlens_common.row_sets import copy_row
from lotlens_result_store import copy_texts as module
from lotlens_result_store.copy_texts import copy_texts
from tests.unit.copy_row_support import PIECES, reference_copy_row

WIDTH = 4  # job, lot, language, text
_PLAIN = [piece for piece in PIECES if not set(piece) & set("\\\t\n\r\x00")]
_WITHOUT_NUL = [piece for piece in PIECES if "\x00" not in piece]


def random_batch(rng: random.Random, pieces: list[str]) -> list[tuple[str, ...]]:
    return [tuple("".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) for _ in range(WIDTH))
            for _ in range(rng.randint(0, 40))]


@pytest.mark.parametrize("pieces", [_PLAIN, _WITHOUT_NUL, PIECES], ids=["plain", "escaped", "with-nul"])
@pytest.mark.parametrize("seed", range(4))
def test_random_batches_are_written_as_copy_row_writes_their_rows(seed: int, pieces: list[str]) -> None:
    rng = random.Random(seed)
    for _ in range(500):
        rows = random_batch(rng, pieces)
        expected = b"".join(map(copy_row, rows))
        assert expected == b"".join(map(reference_copy_row, rows))
        assert copy_texts(rows, WIDTH) == expected, rows


@pytest.mark.parametrize("text", ["", "a\nb", "a\tb", "a\rb", "a\\b", "\\N", "a\r\n", "\n\t", "\x00\n"])
def test_a_batch_with_one_text_to_escape_is_written_as_copy_row_writes_it(text: str) -> None:
    rows = [("job-1", "lot-1", "en", "<p>Car</p>"), ("job-1", "lot-1", "de", text),
            ("job-1", "lot-2", "en", "x")]
    assert copy_texts(rows, WIDTH) == b"".join(map(copy_row, rows)) == b"".join(map(reference_copy_row, rows))


def test_a_batch_that_needs_escaping_is_escaped_a_column_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not by `copy_row` (kept for a text with a NUL): a model's HTML across lines is the usual case.
    monkeypatch.setattr(module, "copy_row", None)
    rows = [("job-1", "lot-1", "de", "<p>Front\tbumper</p>\r\n<p>C:\\</p>"), ("job-1", "lot-2", "en", "")]
    assert copy_texts(rows, WIDTH) == b"".join(map(reference_copy_row, rows))


def test_text_that_cannot_be_utf8_fails_as_it_did() -> None:
    with pytest.raises(UnicodeEncodeError):
        copy_texts([("job", "lot", "en", "\ud800")], WIDTH)
    with pytest.raises(UnicodeEncodeError):
        copy_texts([("job", "lot", "en", "\ud800\n")], WIDTH)
