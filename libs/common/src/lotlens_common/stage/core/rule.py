"""The batching rule: which of a stage's waiting jobs to flush now, and how many lots at once.

Pure code: no I/O, so every edge is unit-tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

from lotlens_common.topics import MAX_MESSAGE_BYTES

# A shard's BatchSubmitted event names every lot it holds, and Kafka refuses a message over
# MAX_MESSAGE_BYTES for good: the lot ids may take all of it but 1 MiB (the envelope's other
# fields and the headers are a few hundred bytes).
RECORDED_LOT_ID_BYTES = MAX_MESSAGE_BYTES - 1024 * 1024


@dataclass(frozen=True)
class WaitingJob:
    """A job with lots waiting in the stage."""

    job_id: str
    waiting: int
    arrived: int
    expected: int
    oldest_enqueued_at: datetime
    tokens_per_lot: int
    # The job was cancelled: what still waits (billed for earlier answers, or sent back since) is
    # dropped at once, never sent (`stage.cancel`).
    cancelled: bool = False


@dataclass(frozen=True)
class Flush:
    """A decision: send up to `lots` waiting lots of `job_id` as one batch."""

    job_id: str
    lots: int


def plan_flushes(jobs: list[WaitingJob], now: datetime, window_s: float, max_requests: int,
                 tokens_enqueued: int, token_limit: int) -> list[Flush]:
    """Jobs whose batch is full, complete (every lot arrived) or older than the window.

    Within the token budget, oldest first; a job whose next batch does not fit waits (it is
    not sent to fail with `token_limit_exceeded`), but a batch too large for an empty budget
    is cut to what fits.
    """
    due = [job for job in jobs if job.waiting >= max_requests or job.arrived >= job.expected
           or now - job.oldest_enqueued_at >= timedelta(seconds=window_s)]
    due.sort(key=lambda job: job.oldest_enqueued_at)
    flushes: list[Flush] = []
    budget = token_limit - tokens_enqueued if token_limit else None
    for job in due:
        lots = min(job.waiting, max_requests)
        if budget is not None:
            affordable = budget // max(job.tokens_per_lot, 1)
            if affordable <= 0:
                break
            lots = min(lots, affordable)
            budget -= lots * job.tokens_per_lot
        flushes.append(Flush(job.job_id, lots))
    return flushes


def affordable(costs: Sequence[int], budget: int | None, nothing_enqueued: bool) -> int:
    """How many of these lots, taken in order, fit in what is left of the token budget.

    `budget` None means no budget. When nothing at all is enqueued, the first lot goes even if it
    alone is larger than the whole budget: waiting could never make room for it.
    """
    if budget is None:
        return len(costs)
    count, spent = 0, 0
    for cost in costs:
        if spent + cost > budget and not (count == 0 and nothing_enqueued):
            break
        count, spent = count + 1, spent + cost
    return count


def recordable(lot_ids: Sequence[str], max_bytes: int = RECORDED_LOT_ID_BYTES) -> int:
    """How many of these lots, taken in order, one BatchSubmitted event can name (each id as JSON
    writes it, and a comma)."""
    total = 0
    for count, lot_id in enumerate(lot_ids):
        total += len(orjson.dumps(lot_id)) + 1
        if total > max_bytes:
            return count
    return len(lot_ids)
