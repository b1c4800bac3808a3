"""The contract's webhook body for one URL, split into numbered parts when it is too large.

A body is `{event, job_id, status, completed_at, processing_summary, lots}`; a split delivery
adds `part` and `total_parts` and each part is a complete body. Lots are packed greedily in
request order when the job's deliveries are scheduled (`plan_parts`), and each part's plan is
stored with its delivery: which lots it carries (by lot id) and, of a cancelled job, its head
and its unsettled lots as they were then. A cancelled job's lots still complete after its
announcement (results OpenAI returns for batches already running), so rebuilt at send time its
parts' boundaries moved: the parts sent later lost lots or passed the limit. A planned part
carries the same lots, the same size, on every attempt, replica and restart. A single lot larger
than the limit travels alone in its own part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from lotlens_common.clock import iso
from lotlens_common.read_models import JobView, processing_summary

EVENT = "batch_job_completed"
# Sizes are bounded with the widest part numbers a body could carry.
_WIDEST_PART = 99_999_999

Lot = dict[str, Any]
# Lot statuses nothing moves any more (result-store `status.TERMINAL_LOT_STATUSES`); a cancelled
# job's `cancelled` lots still complete or fail when OpenAI returns their results.
_SETTLED_LOTS = frozenset({"completed", "failed"})
# Job statuses whose read models still change after the announcement.
_STILL_CHANGING = frozenset({"cancelled"})


def head(job: JobView) -> dict[str, Any]:
    """Every field of the body except the lots (and the part numbers)."""
    return {
        "event": EVENT,
        "job_id": job.job_id,
        "status": job.status,
        # A cancelled job ended when it was cancelled, as its results say.
        "completed_at": iso(job.completed_at or job.cancelled_at),
        "processing_summary": processing_summary(job),
    }


def body(job_head: Mapping[str, Any], lots: Iterable[Lot], part: int = 1, total_parts: int = 1) -> bytes:
    """The exact bytes sent (and signed): compact JSON, non-ASCII kept as UTF-8."""
    doc = dict(job_head)
    if total_parts > 1:
        doc["part"] = part
        doc["total_parts"] = total_parts
    doc["lots"] = list(lots)
    return orjson.dumps(doc)


class PartPacker:
    """Assigns lots, in order, to parts whose bodies stay within `limit` bytes."""

    def __init__(self, job_head: Mapping[str, Any], limit: int) -> None:
        self._empty = len(body(job_head, [], _WIDEST_PART, _WIDEST_PART))
        self._limit = limit
        self._part = 0
        self._size = 0
        self._count = 0

    def place(self, lot_bytes: int) -> int:
        """The part (1-based) of the next lot, given its serialised size."""
        if self._part == 0 or (self._count and self._size + 1 + lot_bytes > self._limit):
            self._part += 1
            self._size, self._count = self._empty + lot_bytes, 1
        else:
            self._size += (1 if self._count else 0) + lot_bytes
            self._count += 1
        return self._part

    @property
    def total_parts(self) -> int:
        """Parts used so far (at least one)."""
        return max(1, self._part)


def lot_size(lot: Lot) -> int:
    """Bytes a lot takes inside a body."""
    return len(orjson.dumps(lot))


@dataclass
class PartPlan:
    """One part of a URL's delivery as scheduled: the lots after `after` through `through` (lot
    ids; None: from the first, to the last), and, of a job still changing, its head and its
    unsettled lots as they were (`as_planned`), sent as they were planned."""

    after: str | None = None
    through: str | None = None
    head: dict[str, Any] | None = None
    as_planned: dict[str, Lot] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The plan as stored with its delivery (`dispatch_queue.part_plan`)."""
        return {"after": self.after, "through": self.through, "head": self.head,
                "as_planned": self.as_planned}

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> PartPlan:
        """A plan as `to_json` stored it."""
        return cls(stored.get("after"), stored.get("through"), stored.get("head"),
                   dict(stored.get("as_planned") or {}))

    def lots(self, lots: Iterable[Lot]) -> Iterator[Lot]:
        """Its lots out of the URL's lots in request order, the unsettled ones as planned."""
        started = self.after is None
        for lot in lots:
            if not started:
                started = lot["lot_id"] == self.after
                continue
            yield self.as_planned.get(lot["lot_id"], lot)
            if lot["lot_id"] == self.through:
                return


def plan_parts(job_head: Mapping[str, Any], lots: Iterable[tuple[str, Lot]],
               limit: int) -> dict[str, list[PartPlan]]:
    """Each webhook URL's parts, from `(url, lot)` pairs in request order.

    The last part of a URL runs to its last lot, whichever: a lot written after the plan (a
    submission replayed after a cancel) is then in exactly one part too.
    """
    changing = job_head.get("status") in _STILL_CHANGING
    # Its summary still moves too (late lots counted): kept, so every part says the same.
    planned_head = dict(job_head) if changing else None
    packers: dict[str, PartPacker] = {}
    plans: dict[str, list[PartPlan]] = {}
    for url, lot in lots:
        packer = packers.get(url)
        if packer is None:
            packer = packers[url] = PartPacker(job_head, limit)
            plans[url] = []
        url_plans = plans[url]
        if packer.place(lot_size(lot)) > len(url_plans):
            after = url_plans[-1].through if url_plans else None
            url_plans.append(PartPlan(after, head=planned_head))
        url_plans[-1].through = lot["lot_id"]
        if changing and lot["status"] not in _SETTLED_LOTS:
            url_plans[-1].as_planned[lot["lot_id"]] = lot
    for url_plans in plans.values():
        url_plans[-1].through = None
    return plans


def part_body(job_head: Mapping[str, Any], lots: Callable[[], Iterable[Lot]], part: int,
              total_parts: int, limit: int, plan: PartPlan | None = None) -> bytes:
    """The body of one part of a URL's delivery, from that URL's lots in request order: its
    `plan`'s lots, or, for a delivery scheduled without one (by the release before plans), the
    lots that pack into that part now.

    Unplanned, the part count was fixed when the job completed; if the packing now gives another
    count (a new limit; a cancelled job's lots completed since), the lots are cut into
    `total_parts` runs of equal lot count instead, so the parts still carry every lot once if
    they are all built from one read.
    """
    if plan is not None:
        return body(plan.head or job_head, plan.lots(lots()), part, total_parts)
    packer = PartPacker(job_head, limit)
    chosen: list[Lot] = []
    count = 0
    for lot in lots():
        count += 1
        if packer.place(lot_size(lot)) == part:
            chosen.append(lot)
    if packer.total_parts != total_parts:
        first, end = (part - 1) * count // total_parts, part * count // total_parts
        chosen = [lot for index, lot in enumerate(lots()) if first <= index < end]
    return body(job_head, chosen, part, total_parts)
