"""Trimming a claimed batch to what is left of the enqueued-token budget."""

from __future__ import annotations

from lotlens_common.stage.core.rule import affordable


def test_without_a_budget_every_lot_goes() -> None:
    assert affordable([500, 500, 500], None, nothing_enqueued=False) == 3


def test_lots_are_taken_in_order_while_their_estimates_fit() -> None:
    assert affordable([400, 400, 100, 400], 1000, nothing_enqueued=False) == 3


def test_nothing_goes_when_the_first_lot_does_not_fit_and_batches_are_still_enqueued() -> None:
    assert affordable([700, 100], 500, nothing_enqueued=False) == 0


def test_a_lot_larger_than_the_whole_budget_goes_alone_once_nothing_is_enqueued() -> None:
    assert affordable([1500, 100], 1000, nothing_enqueued=True) == 1
