"""The gateway's reads of the read models (the result-store is their only writer).

A job is read through the gateway's own outbox facts (`overlay.py`): visible the moment the
client got 201, cancelled the moment it got 200. Blocking calls: the routes run them in a thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, and_, func, or_, select, text
from sqlalchemy.dialects.postgresql import aggregate_order_by

from lotlens_common.db import job_lock
from lotlens_common.events import TERMINAL_JOB_STATUSES, JobCancelled
from lotlens_common.read_models import JobView, job_view
from lotlens_common.tables import jobs, openai_batches, outbox
from lotlens_gateway.errors import job_not_found
from lotlens_gateway.listing_cursor import ListingCursor, listing_position
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.outbox import cancelled_unprojected, facts_of, unprojected_jobs
from lotlens_gateway.overlay import overlaid, read_snapshot
from lotlens_gateway.retry_failed import retry_job_id


@dataclass(frozen=True)
class JobFilter:
    """The `GET /api/v1/batch-jobs` filters."""

    status: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    after: ListingCursor | None = None

    def matches(self, job: JobView) -> bool:
        """Whether a job passes the filters (for jobs read from the outbox rather than queried)."""
        created = job.created_at
        return ((self.status is None or job.status == self.status)
                and (self.created_after is None or (created is not None and created >= self.created_after))
                and (self.created_before is None or (created is not None and created < self.created_before))
                and (self.after is None or self.after.precedes(job)))


T = TypeVar("T")


def _ordered_batch_column(column: Any) -> Any:
    """`column` of the job's OpenAI batches as an array, oldest first (a subquery of a `jobs` row)."""
    return (select(func.array_agg(aggregate_order_by(column, openai_batches.c.created_at,
                                                     openai_batches.c.batch_id)))
            .where(openai_batches.c.job_id == jobs.c.job_id).scalar_subquery())


_retries = jobs.alias("retries")
# A job's row, its batch ids and the job retrying its failed lots in one statement: a status
# poll is one round trip.
_JOB_WITH_BATCHES = select(jobs, _ordered_batch_column(openai_batches.c.stage).label("batch_stages"),
                           _ordered_batch_column(openai_batches.c.batch_id).label("batch_ids"),
                           select(_retries.c.job_id).where(_retries.c.retry_of == jobs.c.job_id)
                           .order_by(_retries.c.created_at).limit(1).scalar_subquery().label("retried_as"))


def batch_ids(row: Any) -> dict[str, list[str]]:
    """stage (`vision`, `translation`) → the job's OpenAI batch ids, oldest first, from such a row."""
    found: dict[str, list[str]] = {}
    for stage, batch_id in zip(row["batch_stages"] or [], row["batch_ids"] or [], strict=True):
        found.setdefault(stage, []).append(batch_id)
    return found


class JobEnded(Exception):
    """The read models say the job ended (completed, failed, cancelled): `job` as they hold it."""

    def __init__(self, job: JobView) -> None:
        super().__init__(f"job {job.job_id} is {job.status}")
        self.job = job


def hold_unended(conn: Connection, job: JobView) -> None:
    """Take the lock the result-store writes the job's rows under, held until `conn`'s transaction
    ends, and raise `JobEnded` if the job ended before: a cancel accepted for a job its last lot
    had settled meanwhile was answered 200, and then the job read `completed`. Held, the
    result-store settles the job only after this transaction, and then sees the cancel.

    A cancel another request recorded meanwhile ends the job too (`JobEnded` with the job as the
    client reads it, `cancelled`): the two requests had both found it running before either
    wrote, and each recorded its own `JobCancelled` and answered 200 with its own time."""
    conn.execute(text(f"SELECT {job_lock(':job_id')}"), {"job_id": job.job_id})
    row = conn.execute(select(jobs).where(jobs.c.job_id == job.job_id)).mappings().first()
    if row is not None and row["status"] in TERMINAL_JOB_STATUSES:
        raise JobEnded(job_view(row))
    # This transaction's own cancel is one of them (written before this runs, `Outbox.append`).
    cancels = conn.execute(select(func.count()).select_from(outbox).where(
        outbox.c.job_id == job.job_id, outbox.c.event_type == JobCancelled.event_type)).scalar_one()
    if cancels > 1:
        raise JobEnded(overlaid(job_view(row) if row is not None else job, facts_of(conn, job.job_id)) or job)


def _refuse_nul(job_id: str) -> None:
    if "\x00" in job_id:  # no job id holds a NUL, and PostgreSQL would refuse the literal
        raise job_not_found(job_id)


class JobStore:
    """Queries over `jobs` and `openai_batches`, counted in the metrics."""

    def __init__(self, engine: Engine, metrics: GatewayMetrics, reads: Engine | None = None) -> None:
        self._engine = engine
        # Reads need no transaction: without one psycopg2 sends no BEGIN and the pool's ROLLBACK
        # on return is a no-op, two round trips saved per request. `reads` should be an
        # autocommit engine (`make_engine(..., autocommit=True)`); the fallback gets the same
        # semantics at the price of setting the level on every checkout.
        self._reads = reads or engine.execution_options(isolation_level="AUTOCOMMIT")
        self._metrics = metrics

    @property
    def engine(self) -> Engine:
        """The engine, for writes."""
        return self._engine

    @property
    def reads(self) -> Engine:
        """The engine for reads outside a transaction (the results stream takes a connection of it
        for each chunk)."""
        return self._reads

    def ping(self) -> None:
        """Raise unless PostgreSQL answers."""
        with self._reads.connect() as conn:
            conn.execute(text("SELECT 1"))

    def job_for_client(self, job_id: str, client_id: str) -> JobView:
        """The client's job; 404 when it does not exist or belongs to someone else."""
        job, _ = self.job_and(job_id, client_id, lambda conn, job: None)
        return job

    def find_job(self, job_id: str, client_id: str) -> JobView | None:
        """The client's job (projected, or only in the outbox yet), or None; another client's is none."""
        with self._reads.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).mappings().first()
            job = self._through_outbox(conn, job_id, job_view(row) if row else None)
        return job if job is not None and job.client_id == client_id else None

    def status_for_client(self, job_id: str, client_id: str) -> tuple[JobView, dict[str, list[str]]]:
        """The client's job (404 as `job_for_client`) and its OpenAI batch ids by stage."""
        _refuse_nul(job_id)
        with self._reads.connect() as conn:
            row = conn.execute(_JOB_WITH_BATCHES.where(jobs.c.job_id == job_id)).mappings().first()
            job = self._through_outbox(conn, job_id, job_view(row) if row else None)
            if job is not None and job.failed_lots and job.status in TERMINAL_JOB_STATUSES:
                job = self._with_pending_retry(conn, job)
        if job is None or job.client_id != client_id:
            raise job_not_found(job_id)
        return job, batch_ids(row) if row else {}

    def _with_pending_retry(self, conn: Connection, job: JobView) -> JobView:
        """A retry accepted but not projected yet is in the outbox under its derived id."""
        if job.retried_as is not None:
            return job
        retry_id = retry_job_id(job.job_id)
        self._metrics.db("read")
        return dataclasses.replace(job, retried_as=retry_id) if facts_of(conn, retry_id).submitted else job

    def job_and(self, job_id: str, client_id: str, then: Callable[[Connection, JobView], T | None],
                snapshot: bool = False) -> tuple[JobView, T | None]:
        """The client's job (404 as `job_for_client`) and `then(conn, job)`, read on one connection;
        with `snapshot`, in one read-only REPEATABLE READ transaction (`read_snapshot`), for a
        `then` whose statements must agree while the result-store projects between them.

        One call, so one thread-pool hop and one checkout; a `then` returning None read nothing.
        """
        _refuse_nul(job_id)
        with (read_snapshot(self._reads) if snapshot else self._reads.connect()) as conn:
            row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).mappings().first()
            job = self._through_outbox(conn, job_id, job_view(row) if row else None)
            if job is None or job.client_id != client_id:
                raise job_not_found(job_id)
            found = then(conn, job)
        if found is not None:
            self._metrics.db("read")
        return job, found

    def _through_outbox(self, conn: Connection, job_id: str, job: JobView | None) -> JobView | None:
        """The projected job, or what the gateway's own outbox says of it when that is newer."""
        self._metrics.db("read")
        if job is not None and job.status in TERMINAL_JOB_STATUSES and job.created_at is not None:
            return job
        self._metrics.db("read")
        return overlaid(job, facts_of(conn, job_id))

    def jobs_for_client(self, client_id: str, where: JobFilter, limit: int,
                        offset: int) -> tuple[list[JobView], int]:
        """One page of the client's jobs, newest first, and how many match in all."""
        # A row without `created_at` was written before its `JobSubmitted` was projected: it is
        # read through the outbox below, where it gets its creation time.
        conditions = [jobs.c.client_id == client_id, jobs.c.created_at.is_not(None)]
        if where.status:
            conditions.append(jobs.c.status == where.status)
        if where.created_after:
            conditions.append(jobs.c.created_at >= where.created_after)
        if where.created_before:
            conditions.append(jobs.c.created_at < where.created_before)
        if where.after and where.after.created_at is not None:
            # `created_at <=` first: the range `ix_jobs_client_created` reads. After a job without
            # a creation time (listed first), every row here comes after the cursor.
            conditions += [jobs.c.created_at <= where.after.created_at,
                           or_(jobs.c.created_at < where.after.created_at,
                               and_(jobs.c.created_at == where.after.created_at,
                                    jobs.c.job_id > where.after.job_id))]
        with read_snapshot(self._reads) as conn:
            # Jobs whose row does not say what the gateway wrote (not projected yet, projected
            # before their JobSubmitted, or cancelled since) are read through the outbox, filtered
            # here and merged into the page: in one snapshot, or a job projected between the
            # reads was listed and counted twice.
            cancelled = cancelled_unprojected(conn, client_id)
            if cancelled:
                conditions.append(jobs.c.job_id.not_in(cancelled))
            rowed = {row["job_id"]: job_view(row) for row in conn.execute(select(jobs).where(
                jobs.c.client_id == client_id, jobs.c.created_at.is_(None))).mappings()}
            if cancelled:
                rowed |= {row["job_id"]: job_view(row) for row in conn.execute(
                    select(jobs).where(jobs.c.job_id.in_(cancelled))).mappings()}
            unseen = [job for job in (self._through_outbox(conn, job_id, rowed.get(job_id)) for job_id
                                      in dict.fromkeys([*unprojected_jobs(conn, client_id), *rowed]))
                      if job is not None and where.matches(job)]
            # The page's projected rows are among those from `offset - len(unseen)` on (at most
            # that many unseen jobs come before it): the rows before are neither read nor sent.
            # Read from 0 to the page's end, a deep page (offset up to 1e9) sent every row before.
            skipped = max(0, offset - len(unseen))
            page = select(jobs).where(*conditions).order_by(jobs.c.created_at.desc(), jobs.c.job_id)
            rows = conn.execute(page.limit(offset + limit - skipped).offset(skipped)).mappings().all()
            total = conn.execute(select(func.count()).select_from(jobs).where(*conditions)).scalar_one()
        self._metrics.db("read", 5 + bool(cancelled))
        found = merged_page([job_view(row) for row in rows], unseen, skipped, offset, limit)
        return found, int(total) + len(unseen)


def merged_page(projected: list[JobView], unseen: list[JobView], skipped: int, offset: int,
                limit: int) -> list[JobView]:
    """Jobs `offset` to `offset + limit` of the projected jobs and `unseen` merged, newest first.

    `projected` are the projected jobs from number `skipped` (`offset - len(unseen)`, or 0) to the
    page's end, in the order PostgreSQL lists them; `unseen` is none of them.
    """
    if skipped == 0:
        return sorted(projected + unseen, key=listing_position)[offset:offset + limit]
    if not projected:  # fewer than `skipped` projected: with every unseen job, still short of the page
        return []
    first = listing_position(projected[0])
    before = sum(1 for job in unseen if listing_position(job) < first)
    # `projected[0]` is job number `skipped + before` of the merged list.
    rest = sorted(projected + [job for job in unseen if listing_position(job) > first], key=listing_position)
    start = offset - skipped - before
    return rest[start:start + limit]
