"""Holding new batches back while OpenAI's enqueued-token queue for the stage's model is full. No I/O.

OpenAI fails a batch whole with `token_limit_exceeded` when the organisation's queue for its model
is full; its lots go back without using an attempt (`collect.py`). The queue is the organisation's:
another workload (README, "Limits") can fill it, unseen by our own budget. Sent again at once,
every round checked the lots' images, uploaded up to 198 MB and created another batch that failed
the same way, until the queue drained. After a refusal the stage creates no new batch for a
minute, twice as long after each further refusal, up to 15 minutes; a batch of ours created since
the last refusal that OpenAI admits (seen past `validating`) ends the series.

The stage's, not the process's: kept in PostgreSQL (`adapters/postgres_queue_hold.py`, one row a
stage, changed under its lock, times by the database's clock), so the instance that collects the
refused batch holds back every replica, which reads it before building. Held in the process, only
that one held back, and the others uploaded and created batches refused the same way. Recovery
reads it too (`quota.may_build`); each scrape of /metrics reads it again (`stage/figures.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

FIRST_HOLD_S = 60.0
LONGEST_HOLD_S = 15 * 60.0
_DOUBLINGS = math.ceil(math.log2(LONGEST_HOLD_S / FIRST_HOLD_S))


class HeldNow(NamedTuple):
    """The seconds new batches are still held back (0: they are not), and the refusals in a row so
    far: kept between holds, until a batch is admitted, so they tell a full queue through the gaps
    in which a try is built and refused again."""

    left_s: float
    refusals: int


@dataclass
class QueueHold:
    """The refusals in a row, and until when (a Unix time) no new batch is created."""

    refusals: int = 0
    refused_at: float = 0.0
    until: float = 0.0

    def refused(self, created_at: float, now_s: float) -> float | None:
        """A batch created at `created_at` failed `token_limit_exceeded`: how long new batches are
        held back now; None for one created before the last refusal (each batch already in flight
        then doubled the hold once more, telling nothing new)."""
        if self.refusals and created_at < math.floor(self.refused_at):
            return None
        # Doublings capped: the count outlives restarts, and 2.0 ** 1024 overflows (ten days refused).
        hold: float = min(FIRST_HOLD_S * 2.0 ** min(self.refusals, _DOUBLINGS), LONGEST_HOLD_S)
        self.refusals += 1
        self.refused_at, self.until = now_s, now_s + hold
        return hold

    def admitted(self, created_at: float) -> None:
        """A batch of ours got past validation: one created since the last refusal ends the series
        (one admitted before the queue filled says nothing of it now)."""
        if self.refusals and created_at >= math.floor(self.refused_at):
            self.refusals = 0

    def now(self, now_s: float) -> HeldNow:
        """The hold as on-call reads it now."""
        return HeldNow(self.left_s(now_s), self.refusals)

    def left_s(self, now_s: float) -> float:
        """How long new batches are still held back (0: they are not)."""
        return max(self.until - now_s, 0.0)

    def holds(self, now_s: float) -> bool:
        """Whether new batches are held back now."""
        return self.left_s(now_s) > 0
