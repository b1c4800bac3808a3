"""The batching rule: which of a stage's waiting jobs to flush now, and how many lots at once.

Pure code: no I/O, so every edge is unit-tested.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
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
    client_id: str
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
                 tokens_enqueued: int, token_limit: int, served: Mapping[str, float] | None = None
                 ) -> list[Flush]:
    """Jobs whose batch is full, complete (every lot arrived) or older than the window.

    Without a token budget, oldest first, each its whole next batch. Within one, client by client
    (`by_client`), each job cut to what its client's share of the room allows (`Shares`); a job
    whose next batch does not fit waits (it is not sent to fail with `token_limit_exceeded`), and
    the jobs after it are still planned.
    """
    due = [job for job in jobs if job.waiting >= max_requests or job.arrived >= job.expected
           or now - job.oldest_enqueued_at >= timedelta(seconds=window_s)]
    due.sort(key=lambda job: job.oldest_enqueued_at)
    if not token_limit:
        return [Flush(job.job_id, min(job.waiting, max_requests)) for job in due]
    due = by_client(due, served)
    shares = Shares(token_limit - tokens_enqueued, len({job.client_id for job in due}), tokens_enqueued == 0)
    flushes: list[Flush] = []
    for job in due:
        # A store that cannot tell a lot's cost says 0: each lot counts 1, so the plan does not cut
        # and the claim, which knows every lot's estimate, does.
        cost = max(job.tokens_per_lot, 1)
        lots = shares.fits(job.client_id, itertools.repeat(cost, min(job.waiting, max_requests)))
        shares.spend(lots * cost)
        if lots:
            flushes.append(Flush(job.job_id, lots))
    return flushes


def by_client(due: list[WaitingJob], served: Mapping[str, float] | None = None) -> list[WaitingJob]:
    """The due jobs (oldest first) client by client: the client served longest ago first (`served`:
    client -> when its last lots were claimed; one never served first of all, then the one waiting
    longest), each one's jobs oldest first. The first is owed the room (`Shares.blocked`), so the
    turns go round: ordered by what waits, a client whose lots cost more than the others' got next
    to nothing of a full budget, and one whose lot outgrew the budget waited for good."""
    served = served or {}
    clients: dict[str, list[WaitingJob]] = {}
    for job in due:
        clients.setdefault(job.client_id, []).append(job)
    order = sorted(clients.values(), key=lambda jobs: (served.get(jobs[0].client_id, -math.inf),
                                                       min(job.oldest_enqueued_at for job in jobs)))
    return [job for jobs in order for job in jobs]


class Shares:
    """What is left of the enqueued-token budget this round, shared between the clients with due jobs.

    Clients (not jobs: one client's thousand jobs must not crowd out another's one) take turns,
    and each may spend an equal part of what is left between it and the clients after it: what
    one leaves goes to the rest. Oldest first over jobs, one client's 50,000-lot job, fed the
    budget's ~120 lots a batch, held every other client's job until its last lot was sent (days,
    with OpenAI's hours-long batches). A turn's first lot goes whenever it fits what is left, even
    past the share: a share smaller than one lot (many clients, a nearly full budget) sent nothing
    to anyone. When nothing at all is enqueued, the first lot goes even if it alone is larger
    than the whole budget: waiting could never make room for it. The first client whose lot does
    not fit what is left stops the round (`blocked`): the room batches free builds up for it, not
    for the others' smaller lots.
    """

    def __init__(self, left: int, clients: int, nothing_enqueued: bool) -> None:
        self.left = left
        self._clients = clients  # still to take their turn, the one taking it included
        self._nothing_enqueued = nothing_enqueued
        self._client: str | None = None
        self._share = 0
        self._turn_spent = 0
        self._turns = 0
        self.blocked = False  # the first turn's lot does not fit: no one else's goes this round

    def fits(self, client_id: str, costs: Iterable[int]) -> int:
        """How many of these lots of the client's, taken in order, fit in its share now (a new
        client starts its turn)."""
        if self.blocked:
            return 0
        if client_id != self._client:
            self._client, self._turn_spent = client_id, 0
            self._share = self.left // max(self._clients, 1)
            self._clients -= 1
            self._turns += 1
        count, spent = 0, 0
        for cost in costs:
            opening = count == 0 and not self._turn_spent and (cost <= self.left or self._nothing_enqueued)
            if spent + cost > self._share - self._turn_spent and not opening:
                # The first turn's first lot fits nothing: the room is kept for it.
                self.blocked = self._turns == 1 and count == 0 and not self._turn_spent
                break
            count, spent = count + 1, spent + cost
        return count

    def spend(self, tokens: int) -> None:
        """The lots of the client taking its turn were claimed: their estimate is taken from the room."""
        self.left -= tokens
        self._turn_spent += tokens
        self._nothing_enqueued = self._nothing_enqueued and not tokens


def recordable(lot_ids: Sequence[str], max_bytes: int = RECORDED_LOT_ID_BYTES) -> int:
    """How many of these lots, taken in order, one BatchSubmitted event can name (each id as JSON
    writes it, and a comma)."""
    total = 0
    for count, lot_id in enumerate(lot_ids):
        total += len(orjson.dumps(lot_id)) + 1
        if total > max_bytes:
            return count
    return len(lot_ids)
