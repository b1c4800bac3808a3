"""Queries over the read models shared by the gateway (polling) and the webhook dispatcher.

The lot shape is the contract's: `{lot_id, status, processed_at, processed_images,
descriptions: [{language, damages}], missing_images}` plus, for failed lots, `error_message`,
`partial_descriptions` (the texts a lot failed at translation keeps: its English and the languages
translated before; its `descriptions` stay empty, as clients that check only the answer's code read
them as a finished lot's) and `missing_languages` (the requested languages it has no text in).
Lots are read a chunk at a time, so a 50,000-lot job never sits whole in memory.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Integer, Text, cast, func, literal, select, tuple_

from lotlens_common.clock import iso
from lotlens_common.events import TERMINAL_JOB_STATUSES
from lotlens_common.model.usage import Usage, total
from lotlens_common.tables import (
    LAST_SEQ,
    LOT_REQUEST_ORDER,
    descriptions,
    jobs,
    lots,
    webhook_attempts,
    webhook_deliveries,
)

STREAM_CHUNK = 1000
# What a download renders ahead of its client at most (JSON bytes, estimated by PostgreSQL before
# the rows are read), or one lot if a lot is bigger. Counted in lots (1,000), a chunk of ten long
# descriptions each was 15 MB held per download while its client did not read.
RENDER_AHEAD_BYTES = 1024 * 1024
# A lot's JSON besides its variable fields (keys, status, times, counts, usage), and a description's.
_LOT_OVERHEAD_BYTES = 400
_TEXT_OVERHEAD_BYTES = 40
# The columns a lot is rendered from: not its image URLs or notes (up to 1 MB each, read for nothing).
_RENDERED = (lots.c.lot_id, lots.c.seq, lots.c.status, lots.c.processed_at, lots.c.processed_images,
             lots.c.missing_images, lots.c.error_message, lots.c.usage)
# The least a running job's revised estimate lies ahead: every lot counted done still leaves the
# job's last projection and its JobCompleted.
LAST_STEPS = timedelta(minutes=1)
# The most it lies ahead: a stuck job's pace (1 lot of 50,000 in a month) carried over the rest
# passed the year 9999, and rendering it failed every status read and the client's jobs list.
FURTHEST_AHEAD = timedelta(days=7)


@dataclass(frozen=True)
class JobView:
    """A job as the API shows it."""

    job_id: str
    client_id: str | None
    status: str
    api_version: str
    languages: list[str]
    total_lots: int
    processed_lots: int
    failed_lots: int
    images_processed: int
    webhook_configured: bool
    error_message: str | None
    created_at: datetime | None
    updated_at: datetime
    estimated_completion: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    # The job this one retries the failed lots of, and the job that retries this one's.
    retry_of: str | None = None
    retried_as: str | None = None
    # Tokens and estimated cost, summed once the job is terminal (None before, or without usage).
    usage: dict[str, Any] | None = None

    @property
    def completion_percentage(self) -> float:
        """Share of lots that reached a final state, in percent with one decimal."""
        if not self.total_lots:
            return 0.0
        return round(100.0 * (self.processed_lots + self.failed_lots) / self.total_lots, 1)

    def expected_completion(self, now: datetime) -> datetime | None:
        """When the job should end, as the API shows it at `now`.

        The intake's estimate until it has passed; after that, while the job still runs, the pace
        so far carried over the lots left (with none done yet, the first estimate's span again).
        Unrevised, a job slower than its estimate showed an end in the past to every poller.
        A job that ended shows its end (a cancelled job showed the estimate, hours ahead).
        """
        if self.status in TERMINAL_JOB_STATUSES:
            return self.completed_at or self.cancelled_at or self.estimated_completion
        first = self.estimated_completion
        if first is None or first > now:
            return first
        started = self.created_at or now
        done = self.processed_lots + self.failed_lots
        left = (now - started) * (self.total_lots - done) / done if done else first - started
        return now + min(max(left, LAST_STEPS), FURTHEST_AHEAD)


def get_job(conn: Connection, job_id: str) -> JobView | None:
    """One job, or None."""
    row = conn.execute(select(jobs).where(jobs.c.job_id == job_id)).mappings().first()
    return job_view(row) if row else None


def job_view(row: Any) -> JobView:
    """Build a JobView from a `jobs` row mapping."""
    return JobView(
        job_id=row["job_id"], client_id=row["client_id"], status=row["status"],
        api_version=row["api_version"] or "1.0.0", languages=list(row["languages"] or []),
        total_lots=row["total_lots"] or 0, processed_lots=row["processed_lots"],
        failed_lots=row["failed_lots"], images_processed=row["images_processed"],
        webhook_configured=row["webhook_configured"], error_message=row["error_message"],
        created_at=row["created_at"], updated_at=row["updated_at"],
        estimated_completion=row["estimated_completion"], completed_at=row["completed_at"],
        cancelled_at=row["cancelled_at"], retry_of=row.get("retry_of"), retried_as=row.get("retried_as"),
        usage=row.get("usage"),
    )


def processing_summary(job: JobView) -> dict[str, Any]:
    """The contract's `processing_summary` block."""
    return {
        "total_lots": job.total_lots,
        "processed_lots": job.processed_lots,
        "failed_lots": job.failed_lots,
        "total_images_processed": job.images_processed,
        "total_processing_time": _processing_time(job),
        **({"usage": job.usage} if job.usage is not None else {}),
    }


def _processing_time(job: JobView) -> str | None:
    # A cancelled job ran until its cancel (the results' `completed_at` shows that time too).
    ended = job.completed_at or job.cancelled_at
    if job.created_at is None or ended is None:
        return None
    return duration_words(max(0, int((ended - job.created_at).total_seconds())))


def _count(number: int, unit: str) -> str:
    return f"{number} {unit}" if number == 1 else f"{number} {unit}s"


def duration_words(seconds: int) -> str:
    """A duration as seed 003 writes it (`45 minutes`), singular for one: `1 minute`, `2 hours 1 minute`."""
    if seconds < 60:
        return _count(seconds, "second")
    if seconds < 3600:
        return _count(seconds // 60, "minute")
    hours, minutes = _count(seconds // 3600, "hour"), seconds % 3600 // 60
    return f"{hours} {_count(minutes, 'minute')}" if minutes else hours


def iter_lot_results(conn: Connection, job: JobView, webhook_url: str | None = None,
                     stream: bool = True) -> Iterator[dict[str, Any]]:
    """The job's lots in request order, each in the contract's shape; optionally one webhook's.

    `stream=False` fetches the lots at once, for small jobs: no server-side cursor, so it also
    works outside a transaction (an AUTOCOMMIT connection).
    """
    lot_query = select(*_RENDERED).where(lots.c.job_id == job.job_id).order_by(*LOT_REQUEST_ORDER)
    if webhook_url is not None:  # by its hash first, as `ix_lots_webhook_order` has it
        lot_query = lot_query.where(func.md5(lots.c.webhook) == func.md5(webhook_url),
                                    lots.c.webhook == webhook_url)
    text_query = (select(descriptions).where(descriptions.c.job_id == job.job_id)
                  .order_by(descriptions.c.lot_id))
    order = {language: i for i, language in enumerate(job.languages)}
    # Per statement: connection-level options would turn every later statement on this
    # connection into a server-side cursor.
    streaming = {"stream_results": True, "yield_per": STREAM_CHUNK} if stream else {}
    chunk: list[Any] = []
    for row in conn.execute(lot_query, execution_options=streaming).mappings():
        chunk.append(row)
        if len(chunk) == STREAM_CHUNK:
            yield from _render(conn, job, chunk, text_query, order)
            chunk = []
    if chunk:
        yield from _render(conn, job, chunk, text_query, order)


def lot_results_in_chunks(engine: Engine, job: JobView,
                          ahead_bytes: int = RENDER_AHEAD_BYTES) -> Iterator[dict[str, Any]]:
    """The job's lots as `iter_lot_results` gives them, read and rendered at most `ahead_bytes` of
    JSON at a time (or one lot), each chunk on a connection taken for it and given back before its
    lots are used: a reader taking its time (a client downloading slowly) holds no connection and
    no transaction meanwhile, and no more than one chunk of lots.

    A server-side cursor held both for the whole download, and 50 slow downloads took the gateway's
    pool; chunks of 1,000 lots were 15 MB at ten long descriptions a lot, and one lot listing 400
    missing image URLs is 1 MB: the lots' sizes are read first (`lot_bytes`), up to 1,000 at a
    time, and each chunk takes as many lots as fit."""
    seq, lot_id = LOT_REQUEST_ORDER
    text_query = select(descriptions).where(descriptions.c.job_id == job.job_id)
    order = {language: i for i, language in enumerate(job.languages)}
    after: tuple[int, str] | None = None
    while True:
        sizes = (select(lot_bytes()).where(lots.c.job_id == job.job_id).order_by(seq, lot_id)
                 .limit(STREAM_CHUNK))
        with engine.connect() as conn:
            window = list(conn.execute(_past(sizes, after)).scalars())
        for count in chunk_counts(window, ahead_bytes):
            query = select(*_RENDERED).where(lots.c.job_id == job.job_id).order_by(seq, lot_id).limit(count)
            with engine.connect() as conn:
                chunk, after = _read_chunk(conn, job, _past(query, after), text_query, order)
            if after is None:
                return
            yield from chunk
        # Until a window finds no lot past the last read: lots a cancelled job's pipeline
        # projects meanwhile ahead of the window's end push its last lots past the count it read
        # (a short window ended the download, and they were listed nowhere).
        if not window:
            return


def lots_by_id(conn: Connection, job: JobView, lot_ids: Collection[str]) -> list[dict[str, Any]]:
    """The job's lots of `lot_ids` (those it has), in request order, each in the contract's shape."""
    rows = conn.execute(select(*_RENDERED).order_by(*LOT_REQUEST_ORDER).where(
        lots.c.job_id == job.job_id, lots.c.lot_id.in_(list(lot_ids)))).mappings().all()
    text_query = select(descriptions).where(descriptions.c.job_id == job.job_id)
    order = {language: i for i, language in enumerate(job.languages)}
    return list(_render(conn, job, list(rows), text_query, order))


def _read_chunk(conn: Connection, job: JobView, query: Any, text_query: Any, order: dict[str, int]
                ) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
    """The lots `query` reads, rendered, and the position of the last (None: none was read)."""
    rows = list(conn.execute(query).mappings())
    if not rows:
        return [], None
    last = rows[-1]
    return list(_render(conn, job, rows, text_query, order)), (
        LAST_SEQ if last["seq"] is None else last["seq"], last["lot_id"])


def chunk_counts(sizes: list[int], budget: int) -> Iterator[int]:
    """How many of the next lots each chunk takes: consecutive lots of `sizes` bytes, as many as fit
    in `budget` together, at least one."""
    count = total = 0
    for size in sizes:
        if count and total + size > budget:
            yield count
            count = total = 0
        count += 1
        total += size
    if count:
        yield count


def lot_bytes() -> Any:
    """About the bytes a lot takes in the results document (PostgreSQL reads text lengths from the
    values' headers; the missing images are measured as JSON text)."""
    text_bytes = func.octet_length(descriptions.c.damages) + _TEXT_OVERHEAD_BYTES
    texts = (select(func.coalesce(func.sum(text_bytes), 0))
             .where(descriptions.c.job_id == lots.c.job_id, descriptions.c.lot_id == lots.c.lot_id)
             .scalar_subquery())
    return (_LOT_OVERHEAD_BYTES + func.octet_length(lots.c.lot_id)
            + func.octet_length(cast(lots.c.missing_images, Text))
            + func.coalesce(func.octet_length(lots.c.error_message), 0) + texts)


def document_bytes(conn: Connection, job: JobView) -> int:
    """About the bytes the job's lots take in its results document."""
    query = select(func.coalesce(func.sum(lot_bytes()), 0)).where(lots.c.job_id == job.job_id)
    return int(conn.execute(query).scalar_one())


def _past(query: Any, after: tuple[int, str] | None) -> Any:
    """`query` of the job's lots after the last one read, if any."""
    return query if after is None else query.where(tuple_(*LOT_REQUEST_ORDER) > _unseen_bound(after))


def _unseen_bound(after: tuple[int, str]) -> Any:
    """The last lot read as a row of scalar subqueries: PostgreSQL plans them as InitPlans and does
    not estimate from their values.

    Estimated from constants, the lots past a position were counted over the whole table's `seq`,
    where positions past a few hundred are rare: a big job's remaining lots were taken for a few
    hundred, and each chunk read and sorted all of them (35 of a 50,000-lot download's 51 chunks, at
    3 million lots). Not seeing the bound, the planner takes a third of the job to remain, and reads
    the chunk down `ix_lots_request_order`.
    """
    return tuple_(select(literal(after[0], Integer)).scalar_subquery(),
                  select(literal(after[1], Text)).scalar_subquery())


def lot_page(conn: Connection, job: JobView, statuses: Collection[str] | None, limit: int, offset: int,
             max_bytes: int) -> tuple[list[dict[str, Any]], int]:
    """One page of the job's lots in request order (only those in `statuses`, if given), and how
    many match in all; each lot in the contract's shape (running jobs' lots too).

    The page takes as many of the next `limit` lots as fit in `max_bytes` of JSON (`lot_bytes`, read
    before the lots), at least one: a lot may list 500 missing URLs of 8 KB, and 500 such lots
    rendered at once were gigabytes for one request."""
    conditions = [lots.c.job_id == job.job_id]
    if statuses is not None:
        conditions.append(lots.c.status.in_(list(statuses)))
    sizes = conn.execute(select(lot_bytes()).where(*conditions).order_by(*LOT_REQUEST_ORDER)
                         .limit(limit).offset(offset)).scalars().all()
    fitting = next(chunk_counts(list(sizes), max_bytes), 0)
    rows = conn.execute(select(*_RENDERED).where(*conditions).order_by(*LOT_REQUEST_ORDER)
                        .limit(fitting).offset(offset)).mappings().all() if fitting else []
    matching = conn.execute(select(func.count()).select_from(lots).where(*conditions)).scalar_one()
    text_query = select(descriptions).where(descriptions.c.job_id == job.job_id)
    order = {language: i for i, language in enumerate(job.languages)}
    return list(_render(conn, job, list(rows), text_query, order)), int(matching)


def _render(conn: Connection, job: JobView, chunk: list[Any], text_query: Any,
            order: dict[str, int]) -> Iterator[dict[str, Any]]:
    texts: dict[str, list[tuple[str, str]]] = {}
    ids = [row["lot_id"] for row in chunk]
    for text_row in conn.execute(text_query.where(descriptions.c.lot_id.in_(ids))).mappings():
        texts.setdefault(text_row["lot_id"], []).append((text_row["language"], text_row["damages"]))
    for row in chunk:
        found = sorted(texts.get(row["lot_id"], []), key=lambda pair: order.get(pair[0], 99))
        listed = [{"language": lang, "damages": html} for lang, html in found]
        failed = row["status"] == "failed"
        lot: dict[str, Any] = {
            "lot_id": row["lot_id"],
            "status": row["status"],
            "processed_at": iso(row["processed_at"]),
            "processed_images": row["processed_images"],
            "descriptions": [] if failed else listed,
            "missing_images": list(row["missing_images"] or []),
        }
        if row["error_message"]:
            lot["error_message"] = row["error_message"]
        if failed:
            have = {language for language, _ in found}
            lot["partial_descriptions"] = listed
            lot["missing_languages"] = [language for language in job.languages if language not in have]
        if row.get("usage"):
            lot["usage"] = lot_usage(row["usage"])
        yield lot


def lot_usage(by_stage: dict[str, Any]) -> dict[str, Any]:
    """A lot's tokens and estimated cost over its stages' answers (`lots.usage` is per stage)."""
    return total(Usage.model_validate(part) for part in by_stage.values()).model_dump()


def job_deliveries(conn: Connection, job_id: str, limit: int, offset: int
                   ) -> tuple[list[dict[str, Any]], int]:
    """One page of the job's webhook deliveries, oldest first, each with every attempt made; and
    how many the job has."""
    total = conn.execute(select(func.count()).select_from(webhook_deliveries)
                         .where(webhook_deliveries.c.batch_job_id == job_id)).scalar_one()
    deliveries = conn.execute(select(webhook_deliveries).where(webhook_deliveries.c.batch_job_id == job_id)
                              .order_by(webhook_deliveries.c.created_at, webhook_deliveries.c.id)
                              .limit(limit).offset(offset)).mappings()
    found = [dict(row) for row in deliveries]
    attempts: dict[str, list[dict[str, Any]]] = {}
    if found:
        rows = conn.execute(select(webhook_attempts)
                            .where(webhook_attempts.c.delivery_id.in_([d["id"] for d in found]))
                            .order_by(webhook_attempts.c.attempt)).mappings()
        for row in rows:
            attempts.setdefault(row["delivery_id"], []).append({
                "attempt": row["attempt"], "attempted_at": iso(row["attempted_at"]),
                "succeeded": row["succeeded"], "status_code": row["status_code"],
                "latency_ms": row["latency_ms"], "error": row["error"]})
    return [{
        "id": d["id"], "webhook_url": d["webhook_url"], "status": d["status"],
        "attempt_count": d["attempt_count"], "created_at": iso(d["created_at"]),
        "last_attempt_at": iso(d["last_attempt_at"]), "delivered_at": iso(d["delivered_at"]),
        "next_attempt_at": iso(d["next_attempt_at"]), "error_message": d["error_message"],
        "last_status_code": d["last_status_code"], "attempts": attempts.get(d["id"], []),
    } for d in found], total
