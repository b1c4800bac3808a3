"""Read models of finished jobs, read once and shared by the attempts of their deliveries.

A finished job's read models no longer change, and a job's deliveries are mostly attempted
together: reading the job and its lots once, instead of once per delivery, takes most of the
database work out of an attempt (a job with 2,000 webhook URLs was 2,000 reads of one lot each).
Jobs with more lots than `max_lots` are not kept whole (their lots are read per URL, as large
parts need anyway), and the cache holds at most `max_lots` lots in all.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Engine, select

from lotlens_common.read_models import JobView, get_job, iter_lot_results
from lotlens_common.tables import lots

Lot = dict[str, Any]


class FinishedJobs:
    """Finished jobs by id, with their lots grouped by webhook URL when the job is small enough."""

    def __init__(self, engine: Engine, max_lots: int = 20_000) -> None:
        self._engine = engine
        self._max_lots = max_lots
        self._jobs: OrderedDict[str, tuple[JobView, dict[str, list[Lot]] | None]] = OrderedDict()
        self._kept_lots = 0
        self._lock = threading.Lock()
        # One reader per job: the attempts that arrive meanwhile wait for its result.
        self._reading: dict[str, threading.Lock] = {}

    def job(self, job_id: str) -> JobView | None:
        """The job, or None when the read models do not have it."""
        entry = self._entry(job_id)
        return entry[0] if entry else None

    def lots_of(self, job_id: str, webhook_url: str) -> Callable[[], Iterable[Lot]]:
        """The URL's lots in request order, as a re-iterable source (see `payloads.part_body`)."""
        entry = self._entry(job_id)
        by_url = entry[1] if entry else None
        if by_url is not None:
            kept = by_url.get(webhook_url, [])
            return lambda: kept
        return lambda: self._read_url(job_id, webhook_url)

    def _read_url(self, job_id: str, webhook_url: str) -> list[Lot]:
        with self._engine.connect() as conn:
            job = get_job(conn, job_id)
            return list(iter_lot_results(conn, job, webhook_url=webhook_url)) if job else []

    def _entry(self, job_id: str) -> tuple[JobView, dict[str, list[Lot]] | None] | None:
        with self._lock:
            if job_id in self._jobs:
                self._jobs.move_to_end(job_id)
                return self._jobs[job_id]
            reading = self._reading.setdefault(job_id, threading.Lock())
        with reading:
            with self._lock:
                if job_id in self._jobs:
                    return self._jobs[job_id]
            entry = self._read(job_id)
            with self._lock:
                self._reading.pop(job_id, None)
                if entry is not None:
                    self._keep(job_id, entry)
            return entry

    def _read(self, job_id: str) -> tuple[JobView, dict[str, list[Lot]] | None] | None:
        with self._engine.connect() as conn:
            job = get_job(conn, job_id)
            if job is None:
                return None
            if job.total_lots > self._max_lots:
                return job, None
            url_of: dict[str, str] = {lot_id: url for lot_id, url in conn.execute(
                select(lots.c.lot_id, lots.c.webhook).where(lots.c.job_id == job_id,
                                                            lots.c.webhook.is_not(None)))}
            by_url: dict[str, list[Lot]] = {}
            for lot in iter_lot_results(conn, job):
                url = url_of.get(lot["lot_id"])
                if url is not None:
                    by_url.setdefault(url, []).append(lot)
            return job, by_url

    def _keep(self, job_id: str, entry: tuple[JobView, dict[str, list[Lot]] | None]) -> None:
        self._jobs[job_id] = entry
        self._kept_lots += _size(entry)
        while self._kept_lots > self._max_lots and len(self._jobs) > 1:
            _, dropped = self._jobs.popitem(last=False)
            self._kept_lots -= _size(dropped)


def _size(entry: tuple[JobView, dict[str, list[Lot]] | None]) -> int:
    return sum(map(len, entry[1].values())) if entry[1] else 0
