"""Read-your-writes: the read models seen through the gateway's own not-yet-projected facts.

The result-store projects events some time after the gateway answered (and not at all while
Kafka is down). Until then a submitted job reads `pending` from its outbox `JobSubmitted`, and a
cancelled job reads `cancelled`, every unfinished lot with it, from its outbox `JobCancelled`.
The projected rows win as soon as they say more (a terminal status).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import JSON, Connection, cast, select

from lotlens_common.events import TERMINAL_JOB_STATUSES, JobSubmitted, LotSubmitted
from lotlens_common.read_models import JobView, lot_page
from lotlens_common.tables import outbox
from lotlens_gateway.outbox import JobFacts

CANCELLED = "cancelled"
_SETTLED_LOTS = frozenset({"completed", "failed", CANCELLED})
_UNSETTLED_LOTS = frozenset({"pending", "processing", "translating"})


def submitted_view(facts: JobFacts) -> JobView | None:
    """A job known only from its outbox `JobSubmitted`: pending, nothing processed yet."""
    if facts.submitted is None or not isinstance(facts.submitted.event, JobSubmitted):
        return None
    event = facts.submitted.event
    return JobView(
        job_id=event.job_id, client_id=event.client_id, status="pending", api_version=event.api_version,
        languages=list(event.languages), total_lots=event.total_lots, processed_lots=0, failed_lots=0,
        images_processed=0, webhook_configured=bool(event.webhook_urls), error_message=None,
        created_at=event.created_at, updated_at=event.created_at,
        estimated_completion=event.estimated_completion, completed_at=None, cancelled_at=None,
        retry_of=event.retry_of)


def overlaid(job: JobView | None, facts: JobFacts) -> JobView | None:
    """The job as the client last changed it: projected row, else outbox; a cancellation applied."""
    view = job or submitted_view(facts)
    if view is None or facts.cancelled_at is None or view.status in TERMINAL_JOB_STATUSES:
        return view
    return dataclasses.replace(view, status=CANCELLED, cancelled_at=facts.cancelled_at,
                               updated_at=facts.cancelled_at)


def job_lots(job: JobView, lot_results: Iterable[dict[str, Any]],
             connect: Callable[[], AbstractContextManager[Connection]]) -> Iterator[dict[str, Any]]:
    """The job's lots for the results document; a cancelled job's unfinished lots read `cancelled`.

    Lots the result-store has not projected yet (the cancellation came first) are read from the
    outbox (on a connection from `connect`), so every lot of a cancelled job is listed.
    """
    if job.status != CANCELLED:
        yield from lot_results
        return
    seen: set[str] = set()
    for lot in lot_results:
        seen.add(lot["lot_id"])
        if lot["status"] not in _SETTLED_LOTS:
            lot["status"] = CANCELLED
        yield lot
    if len(seen) >= job.total_lots:
        return
    for lot_id in submitted_lot_ids(job.job_id, connect):
        if lot_id not in seen:
            seen.add(lot_id)
            yield {"lot_id": lot_id, "status": CANCELLED, "processed_at": None, "processed_images": 0,
                   "descriptions": [], "missing_images": []}


def submitted_lot_ids(job_id: str, connect: Callable[[], AbstractContextManager[Connection]]) -> list[str]:
    """The lot ids of the job's outbox `LotSubmitted` events, in request order.

    Only the ids leave PostgreSQL (at most 50,000 of 256 characters): the events were read whole
    into one list, each with its image URLs and notes, a cancelled 50,000-lot job's whole
    submission per request. One query, not chunks: `ix_outbox_job` does not order a job's rows by
    id, so each chunk would read and parse every one of them again.
    """
    lot_id = cast(outbox.c.payload, JSON)["data"]["lot_id"].as_string()
    query = (select(lot_id)
             .where(outbox.c.job_id == job_id, outbox.c.event_type == LotSubmitted.event_type)
             .order_by(outbox.c.id))
    with connect() as conn:
        return list(conn.execute(query).scalars())


def lots_page(conn: Connection, job: JobView, status: str | None, limit: int, offset: int, max_bytes: int
              ) -> tuple[list[dict[str, Any]], int]:
    """One page of the job's lots (`lot_page`); a cancelled job's unfinished lots read `cancelled`,
    and are the ones `status=cancelled` finds, before the result-store has projected it."""
    if job.status != CANCELLED:
        return lot_page(conn, job, None if status is None else [status], limit, offset, max_bytes)
    statuses: set[str] | None = None
    if status is not None:
        statuses = set() if status in _UNSETTLED_LOTS else {status}
        if status == CANCELLED:
            statuses |= _UNSETTLED_LOTS
    page, total = lot_page(conn, job, statuses, limit, offset, max_bytes)
    for lot in page:
        if lot["status"] not in _SETTLED_LOTS:
            lot["status"] = CANCELLED
    return page, total
