"""The contract's webhook body for one URL, split into numbered parts when it is too large.

A body is `{event, job_id, status, completed_at, processing_summary, lots}`; a split delivery
adds `part` and `total_parts` and each part is a complete body. Lots are packed greedily in
request order, so the same read models and limit always give the same parts: the handler counts
the parts when the job completes, the worker rebuilds one part per attempt (one part in memory).
A single lot larger than the limit travels alone in its own part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from lotlens_common.clock import iso
from lotlens_common.read_models import JobView, processing_summary

EVENT = "batch_job_completed"
# Sizes are bounded with the widest part numbers a body could carry.
_WIDEST_PART = 99_999_999

Lot = dict[str, Any]


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


def count_parts_by_url(job_head: Mapping[str, Any], lots: Iterable[tuple[str, Lot]],
                       limit: int) -> dict[str, int]:
    """How many parts each webhook URL's delivery needs, from `(url, lot)` pairs in request order."""
    packers: dict[str, PartPacker] = {}
    for url, lot in lots:
        packer = packers.get(url)
        if packer is None:
            packer = packers[url] = PartPacker(job_head, limit)
        packer.place(lot_size(lot))
    return {url: packer.total_parts for url, packer in packers.items()}


def part_body(job_head: Mapping[str, Any], lots: Callable[[], Iterable[Lot]], part: int,
              total_parts: int, limit: int) -> bytes:
    """The body of one part of a URL's delivery, from that URL's lots in request order.

    The part count was fixed when the job completed; if the limit has changed since (a new
    configuration), the lots are cut into `total_parts` runs of equal lot count instead, so the
    parts still carry every lot exactly once.
    """
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
