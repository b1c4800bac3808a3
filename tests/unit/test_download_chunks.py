"""How a download's lots are cut into chunks of about `RENDER_AHEAD_BYTES` (no I/O)."""

from __future__ import annotations

from lotlens_common.read_models import chunk_counts


def test_lots_are_taken_while_they_fit_the_budget_together() -> None:
    assert list(chunk_counts([300, 300, 300, 300, 100], 700)) == [2, 3]


def test_a_lot_bigger_than_the_budget_is_a_chunk_of_its_own() -> None:
    assert list(chunk_counts([100, 5000, 100, 100], 1000)) == [1, 1, 2]


def test_no_lots_make_no_chunk() -> None:
    assert list(chunk_counts([], 1000)) == []
