"""A rate-limit window counted in slots: which slots a decision sums, and when a full one reopens.

A window of `W` seconds is counted in `SLOTS` slots of `W / SLOTS` (a second of a minute), aligned
on the epoch. A decision at `now` sums the slots that start after `now - W`; the one holding
`now - W` is dropped whole. So a full window reopens at most `W` after `now` (a `Retry-After` never
exceeds the window), and a client keeping to the limit in every `W` seconds is never refused; in
exchange the sum can miss what arrived in the last `W` seconds within that dropped slot (at most
one slot's requests).
No I/O: `ratelimit.py` keeps the counts in PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SLOTS = 60
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Slots:
    """The slots of a window of `window` length."""

    window: timedelta
    slot: timedelta

    @classmethod
    def of(cls, window_s: int) -> Slots:
        """A window of `window_s` seconds in `SLOTS` slots (whole microseconds, as PostgreSQL keeps)."""
        window = timedelta(seconds=window_s)
        return cls(window, window // SLOTS)

    def start(self, now: datetime) -> datetime:
        """The start of the slot `now` falls in."""
        return now - (now - _EPOCH) % self.slot

    def oldest(self, now: datetime) -> datetime:
        """The start of the oldest slot a decision at `now` sums (the first starting after `now - window`)."""
        return self.start(now - self.window) + self.slot

    def leaves_at(self, start: datetime) -> datetime:
        """When the slot starting at `start` stops being summed: a window after its start."""
        return start + self.window

    def reopens_at(self, counts: Iterable[tuple[datetime, int]], limit: int) -> datetime | None:
        """When the summed slots (`counts`: start, requests) next hold fewer than `limit`
        requests, if no other arrives; None if they already do."""
        ordered = sorted(counts)
        left = sum(count for _, count in ordered)
        reopens = None
        for start, count in ordered:
            if left < limit:
                break
            left -= count
            reopens = self.leaves_at(start)
        return reopens
