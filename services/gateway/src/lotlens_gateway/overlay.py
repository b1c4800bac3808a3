"""Read-your-writes: the read models seen through the gateway's own not-yet-projected facts.

The result-store projects events some time after the gateway answered (and not at all while
Kafka is down). Until then a submitted job reads `pending` from its outbox `JobSubmitted`, and a
cancelled job reads `cancelled`, every unfinished lot with it, from its outbox `JobCancelled`.
The projected rows win as soon as they say more (a terminal status). A lot not projected yet is
read from its outbox `LotSubmitted`, in the results document and the lots pages alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from itertools import accumulate, takewhile
from typing import Any

import orjson
from sqlalchemy import JSON, Connection, Engine, cast, exists, func, select

from lotlens_common.events import TERMINAL_JOB_STATUSES, JobSubmitted, LotSubmitted
from lotlens_common.read_models import STREAM_CHUNK, JobView, chunk_counts, lot_page, lots_by_id
from lotlens_common.tables import LAST_SEQ, LOT_REQUEST_ORDER, lots, outbox
from lotlens_gateway.outbox import JobFacts

CANCELLED = "cancelled"
_PENDING = "pending"
_SETTLED_LOTS = frozenset({"completed", "failed", CANCELLED})
_UNSETTLED_LOTS = frozenset({"pending", "processing", "translating"})
_FINISHED_JOBS = TERMINAL_JOB_STATUSES - {CANCELLED}


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


def with_submission(job: JobView, facts: JobFacts) -> JobView:
    """A row the result-store wrote from a later event (a `VisionBatchSubmitted`, on another topic)
    before the job's `JobSubmitted`, completed from the outbox's `JobSubmitted`: the row's status
    and counters, the submission's creation time, languages, size, webhooks and estimate.

    Such a row has no `created_at` (projecting `JobSubmitted` writes it, with the rest): read as
    it was, the job showed `created_at: null`, no languages, no lots and no webhook, and the
    listing's date filters dropped it.
    """
    submitted = submitted_view(facts)
    if job.created_at is not None or submitted is None:
        return job
    return dataclasses.replace(
        job, client_id=job.client_id or submitted.client_id, api_version=submitted.api_version,
        languages=submitted.languages, total_lots=submitted.total_lots,
        webhook_configured=submitted.webhook_configured, created_at=submitted.created_at,
        estimated_completion=submitted.estimated_completion, retry_of=submitted.retry_of)


def overlaid(job: JobView | None, facts: JobFacts) -> JobView | None:
    """The job as the client last changed it: projected row (completed from the outbox while its
    `JobSubmitted` is not projected), else outbox; a cancellation applied."""
    view = submitted_view(facts) if job is None else with_submission(job, facts)
    if view is None or facts.cancelled_at is None or view.status in TERMINAL_JOB_STATUSES:
        return view
    return dataclasses.replace(view, status=CANCELLED, cancelled_at=facts.cancelled_at,
                               updated_at=facts.cancelled_at)


def job_lots(job: JobView, lot_results: Iterable[dict[str, Any]],
             snapshot: Callable[[], AbstractContextManager[Connection]]) -> Iterator[dict[str, Any]]:
    """The job's lots for the results document; a cancelled job's unfinished lots read `cancelled`.

    Lots the result-store has not projected (the cancellation came first) are read from the
    outbox, so every lot of a cancelled job is listed, once: their ids are read before the
    projected lots (`unprojected_lot_ids`, on a connection from `snapshot` whose statements see
    one snapshot, ended before any lot is sent), and a lot projected since is listed where the
    projected lots list it. A lot whose row has no position yet (`unplaced_lot_ids`) and that the
    projected lots did not list (placed behind them meanwhile) is read again at the end.
    """
    if job.status != CANCELLED:
        yield from lot_results
        return
    with snapshot() as conn:
        waiting = unprojected_lot_ids(conn, job)
        unplaced = unplaced_lot_ids(conn, job)
    for lot in _cancelled(lot_results):
        waiting.pop(lot["lot_id"], None)
        unplaced.pop(lot["lot_id"], None)
        yield lot
    if unplaced:  # placed since, behind the lots already listed: read again
        with snapshot() as conn:
            placed = lots_by_id(conn, job, unplaced)
        # Sent once the snapshot has ended: yielded inside it, its transaction idled as long as
        # the client took to download them, and past the idle timeout the download broke.
        yield from _cancelled(placed)
    for lot_id in waiting:
        yield unprojected_lot(lot_id, CANCELLED)


def _cancelled(lot_results: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A cancelled job's lots, its unfinished ones reading `cancelled`."""
    for lot in lot_results:
        if lot["status"] not in _SETTLED_LOTS:
            lot["status"] = CANCELLED
        yield lot


def unplaced_lot_ids(conn: Connection, job: JobView) -> dict[str, None]:
    """The job's lots with a row but no position yet (a later stage's event projected before their
    `LotSubmitted`): listed last, and, if their `LotSubmitted` is projected while the job's lots
    are read, at a position the reading may have passed."""
    unplaced = select(lots.c.lot_id).where(lots.c.job_id == job.job_id, LOT_REQUEST_ORDER[0] == LAST_SEQ)
    return dict.fromkeys(conn.execute(unplaced).scalars())


def unprojected_lot(lot_id: str, status: str) -> dict[str, Any]:
    """A lot known only from its outbox `LotSubmitted`, in the contract's shape: nothing done yet."""
    return {"lot_id": lot_id, "status": status, "processed_at": None, "processed_images": 0,
            "descriptions": [], "missing_images": []}


def outbox_lot_id() -> Any:
    """The lot id inside an outbox `LotSubmitted` row's payload (parsed by PostgreSQL)."""
    return cast(outbox.c.payload, JSON)["data"]["lot_id"].as_string()


def unprojected_lot_ids(conn: Connection, job: JobView) -> dict[str, None]:
    """The ids of the job's lots the result-store has not projected, from their outbox
    `LotSubmitted` events in request order (a dict: an ordered set), all read before this returns.

    `STREAM_CHUNK` ids a statement, each chunk read down `ix_outbox_job_events` past the last id
    of the one before (read at once, PostgreSQL sorted the job's rows). Every chunk must see the
    same snapshot (`conn` in a REPEATABLE READ transaction, or a job of one chunk): read on a
    connection of their own each, as the client downloaded, after the projected lots, chunks
    found nothing once the relay's prune had deleted the job's rows (published over
    `LOTLENS_OUTBOX_RETENTION_S` ago, while the result-store caught up with them), and the
    results lacked those lots, silently. Read first, in one snapshot, each lot is in one of the
    two: a row pruned before is of a projected lot, and a lot projected after is in both
    (`job_lots` lists it once). The snapshot lasts while the ids are read, not while the client
    downloads (a slow client would hold back vacuum). Only the ids leave PostgreSQL: 50,000 of
    40 characters are 6.5 MB here (17 MB at the 256-character maximum), what the old chunks' set
    of the ids seen came to; a 50,000-lot job's submissions (image URLs, notes) are never read.
    """
    projected = conn.execute(select(func.count()).select_from(lots)
                             .where(lots.c.job_id == job.job_id)).scalar_one()
    if projected >= job.total_lots:
        return {}
    conditions = [outbox.c.job_id == job.job_id, outbox.c.event_type == LotSubmitted.event_type]
    if projected:
        conditions.append(~exists().where(lots.c.job_id == job.job_id, lots.c.lot_id == outbox_lot_id()))
    waiting: dict[str, None] = {}
    after = 0
    while True:
        chunk = conn.execute(select(outbox.c.id, outbox_lot_id()).where(*conditions, outbox.c.id > after)
                             .order_by(outbox.c.id).limit(STREAM_CHUNK)).all()
        waiting.update((lot_id, None) for _, lot_id in chunk)
        if len(chunk) < STREAM_CHUNK:
            return waiting
        after = chunk[-1][0]


def lots_page(conn: Connection, job: JobView, status: str | None, limit: int, offset: int, max_bytes: int
              ) -> tuple[list[dict[str, Any]], int]:
    """One page of the job's lots and how many match in all, listed as `batch-results` lists them:
    the projected lots (`lot_page`), then those only the outbox holds yet (`outbox_lots_page`).

    A cancelled job's unfinished lots read `cancelled`, and are the ones `status=cancelled` finds,
    before the result-store has projected it; a lot not projected yet reads `pending` (`cancelled`
    in a cancelled job). Those lots were missing: a job the result-store had not projected listed
    no lot (total 0) while its status counted them and its results listed them. `conn` must see
    one snapshot (`read_snapshot`): a lot projected between the two reads is in neither.
    """
    page, matching = lot_page(conn, job, _projected_statuses(job, status), limit, offset, max_bytes)
    if job.status == CANCELLED:
        for lot in page:
            if lot["status"] not in _SETTLED_LOTS:
                lot["status"] = CANCELLED
    waiting_status = CANCELLED if job.status == CANCELLED else _PENDING
    if status not in (None, waiting_status) or job.status in _FINISHED_JOBS:
        return page, matching  # a completed or failed job has every lot projected
    projected = matching if status is None else None
    return outbox_lots_page(conn, job, waiting_status, page, (matching, projected), limit, offset, max_bytes)


def _projected_statuses(job: JobView, status: str | None) -> set[str] | None:
    """The projected statuses `status` finds: in a cancelled job, `cancelled` finds the unfinished too."""
    if status is None:
        return None
    if job.status != CANCELLED:
        return {status}
    statuses = set() if status in _UNSETTLED_LOTS else {status}
    return statuses | _UNSETTLED_LOTS if status == CANCELLED else statuses


def outbox_lots_page(conn: Connection, job: JobView, status: str, page: list[dict[str, Any]],
                     counts: tuple[int, int | None], limit: int, offset: int, max_bytes: int
                     ) -> tuple[list[dict[str, Any]], int]:
    """`page` of the projected lots completed with the job's lots only the outbox holds (each in
    `status`), as many as fit in `limit` and what `max_bytes` leaves (at least one lot a page), and
    the total counting them. `counts`: the projected lots matching the page's filter, and all the
    job's projected lots (None: not counted yet).

    A page's lots are found by offset in PostgreSQL and only their ids leave it: a 50,000-lot job's
    submissions (image URLs, notes) are never read into memory. While none of the job's lots is
    projected, the page's rows are found by id alone and only theirs are parsed.
    """
    matching, projected = counts
    if projected is None:
        projected = conn.execute(select(func.count()).select_from(lots)
                                 .where(lots.c.job_id == job.job_id)).scalar_one()
    if projected >= job.total_lots:
        return page, matching
    conditions = [outbox.c.job_id == job.job_id, outbox.c.event_type == LotSubmitted.event_type]
    if projected:
        conditions.append(~exists().where(lots.c.job_id == job.job_id, lots.c.lot_id == outbox_lot_id()))
    total = matching + conn.execute(select(func.count()).select_from(outbox).where(*conditions)).scalar_one()
    if len(page) == limit or (page and offset + len(page) < matching):
        return page, total  # the projected lots fill this page (or its bytes cut it short)
    # The page's rows by id first (down `ix_outbox_job_events`, in order), then only theirs parsed.
    rows = conn.execute(select(outbox.c.id).where(*conditions).order_by(outbox.c.id)
                        .offset(max(0, offset - matching)).limit(limit - len(page))).scalars().all()
    ids = conn.execute(select(outbox_lot_id()).where(outbox.c.id.in_(rows))
                       .order_by(outbox.c.id)).scalars().all() if rows else []
    waiting = [unprojected_lot(lot_id, status) for lot_id in ids]
    sizes = [len(orjson.dumps(lot)) for lot in waiting]
    if page:  # the page's own lots are measured as written; only lots that fit in the rest join
        room = max_bytes - sum(len(orjson.dumps(lot)) for lot in page)
        fitting = len(list(takewhile(lambda used: used <= room, accumulate(sizes))))
    else:
        fitting = next(chunk_counts(sizes, max_bytes), 0)
    return page + waiting[:fitting], total


@contextmanager
def read_snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection in a read-only REPEATABLE READ transaction: all its statements see one moment
    of the database (outbox and read models alike, while the result-store projects between them)."""
    with engine.connect() as conn:
        conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn
