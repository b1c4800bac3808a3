"""The arithmetic of a rate-limit window counted in slots (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from lotlens_gateway.slots import Slots

MINUTE = Slots.of(60)
T = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def seconds(value: float) -> datetime:
    return T + timedelta(seconds=value)


def test_a_minute_is_counted_in_seconds_aligned_on_the_epoch() -> None:
    assert MINUTE.slot == timedelta(seconds=1)
    assert MINUTE.start(seconds(7.9)) == seconds(7)
    assert MINUTE.start(seconds(7)) == seconds(7)


def test_a_decision_drops_the_slot_holding_the_moment_a_window_ago() -> None:
    assert MINUTE.oldest(seconds(60.4)) == seconds(1)
    assert MINUTE.oldest(seconds(60)) == seconds(1)
    assert MINUTE.oldest(seconds(59.9)) == seconds(0)
    assert MINUTE.leaves_at(seconds(0)) == seconds(60)
    # Just as it leaves, the slot is no longer the oldest summed.
    assert MINUTE.oldest(MINUTE.leaves_at(seconds(0))) == seconds(1)


def test_a_short_window_has_slots_of_whole_microseconds() -> None:
    assert Slots.of(1).slot == timedelta(microseconds=16_666)
    assert Slots.of(3600).slot == timedelta(minutes=1)


def test_a_full_window_reopens_when_enough_of_its_oldest_slots_have_left() -> None:
    counts = [(seconds(5), 2), (seconds(0), 3)]
    assert MINUTE.reopens_at(counts, 5) == seconds(60)
    assert MINUTE.reopens_at(counts, 2) == seconds(65)
    assert MINUTE.reopens_at(counts, 6) is None
    assert MINUTE.reopens_at([], 1) is None
