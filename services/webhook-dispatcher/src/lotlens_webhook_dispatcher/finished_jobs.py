"""Read models of finished jobs, read once and shared by the attempts of their deliveries.

A finished job's read models no longer change, and a job's deliveries are mostly attempted
together: reading the job and its lots once, instead of once per delivery, takes most of the
database work out of an attempt (a job with 2,000 webhook URLs was 2,000 reads of one lot each).
The cache holds at most `max_bytes` of lots (their descriptions' text, the bulk of them): a job
that does not fit is not kept, and its lots are read per URL and streamed, a chunk at a time, into
the one part being built. Counted in lots, 20,000 lots of ten long descriptions were half a
gigabyte kept, and a big job's lots for one URL were read whole on every attempt (1.3 GB for
50,000): past the pod's memory, killed, and killed again on the same deliveries.

"Finished" is not "final": a cancelled job's lots still get the results OpenAI returns for them
after its webhooks went. So a copy is kept per scheduling (one scheduling writes the same time on
all its deliveries): a delivery scheduled at another time (a redelivery the client asks for later)
reads the job again, and each round's attempts and retries use their own copy, side by side while
both are attempted. Built from the first copy, the redelivered webhook said again that lots the
results show completed, and paid for, were cancelled. The times are compared for equality only,
never ordered, so replicas' clocks that disagree cannot make a stale copy look fresh.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from lotlens_common.read_models import JobView, get_job, iter_lot_results
from lotlens_common.tables import lots

Lot = dict[str, Any]
_Key = tuple[str, datetime | None]  # a job, and when the deliveries it is read for were scheduled


class FinishedJobs:
    """Finished jobs by id, with their lots grouped by webhook URL when the job is small enough."""

    def __init__(self, engine: Engine, max_bytes: int = 64 * 1024 * 1024, max_lots: int = 20_000) -> None:
        self._engine = engine
        self._max_bytes, self._max_lots = max_bytes, max_lots
        # By job and the time its deliveries were scheduled (None: a caller that is no delivery).
        self._jobs: OrderedDict[_Key, _Entry] = OrderedDict()
        self._kept_bytes = 0
        self._lock = threading.Lock()
        # One reader per copy: the attempts that arrive meanwhile wait for its result.
        self._reading: dict[_Key, threading.Lock] = {}

    def job(self, job_id: str, scheduled_at: datetime | None = None) -> JobView | None:
        """The job as read for deliveries scheduled at `scheduled_at`, or None when the read models
        do not have it."""
        entry = self._entry((job_id, scheduled_at))
        return entry.job if entry else None

    def kept_bytes(self) -> int:
        """The size of the lots kept, as the budget counts it."""
        with self._lock:
            return self._kept_bytes

    def lots_of(self, job_id: str, webhook_url: str,
                scheduled_at: datetime | None = None) -> Callable[[], Iterable[Lot]]:
        """The URL's lots in request order, as read for deliveries scheduled at `scheduled_at`, as a
        re-iterable source (see `payloads.part_body`)."""
        entry = self._entry((job_id, scheduled_at))
        if entry is not None and entry.by_url is not None:
            kept = entry.by_url.get(webhook_url, [])
            return lambda: kept
        return lambda: self._read_url(job_id, webhook_url)

    def _read_url(self, job_id: str, webhook_url: str) -> Iterator[Lot]:
        """Streamed from a server-side cursor, a chunk at a time: never the URL's lots at once."""
        with self._engine.begin() as conn:
            job = get_job(conn, job_id)
            if job is not None:
                yield from iter_lot_results(conn, job, webhook_url=webhook_url)

    def _entry(self, key: _Key) -> _Entry | None:
        with self._lock:
            kept = self._jobs.get(key)
            if kept is not None:
                self._jobs.move_to_end(key)
                return kept
            reading = self._reading.setdefault(key, threading.Lock())
        with reading:
            with self._lock:
                kept = self._jobs.get(key)
                if kept is not None:
                    return kept
            entry = self._read(key[0])
            with self._lock:
                self._reading.pop(key, None)
                if entry is not None:
                    self._keep(key, entry)
            return entry

    def _read(self, job_id: str) -> _Entry | None:
        with self._engine.begin() as conn:
            job = get_job(conn, job_id)
            if job is None:
                return None
            if job.total_lots > self._max_lots:
                return _Entry(job)
            url_of: dict[str, str] = {lot_id: url for lot_id, url in conn.execute(
                select(lots.c.lot_id, lots.c.webhook).where(lots.c.job_id == job_id,
                                                            lots.c.webhook.is_not(None)))}
            by_url: dict[str, list[Lot]] = {}
            size = 0
            for lot in iter_lot_results(conn, job):
                url = url_of.get(lot["lot_id"])
                if url is not None:
                    size += lot_bytes(lot)
                    if size > self._max_bytes:
                        return _Entry(job)  # too big to keep: read per URL, streamed
                    by_url.setdefault(url, []).append(lot)
            return _Entry(job, by_url, size)

    def _keep(self, key: _Key, entry: _Entry) -> None:
        replaced = self._jobs.pop(key, None)
        if replaced is not None:
            self._kept_bytes -= replaced.size
        self._jobs[key] = entry
        self._kept_bytes += entry.size
        while self._kept_bytes > self._max_bytes and len(self._jobs) > 1:
            _, dropped = self._jobs.popitem(last=False)
            self._kept_bytes -= dropped.size


@dataclass(frozen=True)
class _Entry:
    job: JobView
    by_url: dict[str, list[Lot]] | None = None  # None: not kept, read per URL
    size: int = 0


def lot_bytes(lot: Lot) -> int:
    """About what a lot takes in memory: its texts, and a little for the rest."""
    texts = [*lot["descriptions"], *lot.get("partial_descriptions", ())]
    return 512 + sum(len(text["damages"]) for text in texts)
