"""The gateway's one durable write: accepted events appended to the `outbox` table.

A submission's `JobSubmitted` and every `LotSubmitted` (or a `JobCancelled`, a redelivery request)
are written with COPY in the request's own transaction, together with its idempotency record;
the relay (`relay.py`) publishes them to Kafka afterwards. So a 201 means the events are durable
and will reach Kafka, and an error means nothing was written: no job without its answer. A COMMIT
whose acknowledgement is lost (the connection broke: a failover) is looked up on a new connection:
committed, the write succeeded; not known, the answer says it may have been written.

The rows are also facts the gateway can read back before the result-store projects them
(`facts_of`): a job is visible, and a cancellation effective, the moment the client is answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Connection, Engine, exists, select, text
from sqlalchemy.exc import DBAPIError

from lotlens_common.envelope import Envelope, decode, encode
from lotlens_common.events import TERMINAL_JOB_STATUSES, JobCancelled, JobSubmitted
from lotlens_common.row_sets import copy_in, copy_row
from lotlens_common.tables import jobs, outbox
from lotlens_gateway.errors import ApiError, write_unconfirmed
from lotlens_gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

_COPY = "COPY outbox (topic, job_id, client_id, event_type, payload) FROM STDIN"
# Taken first in every append, before COPY hands out ids: the relay's floor counts on a
# transaction holding outbox ids having its transaction id already (`outbox_floor`).
_TRANSACTION_ID = text("SELECT pg_current_xact_id()::text")
_TRANSACTION_STATUS = text("SELECT pg_xact_status(CAST(:id AS xid8))")
# How long a COMMIT whose acknowledgement was lost is asked after (its backend may still be
# finishing it, or the database just failing over) before the answer says "unknown".
_OUTCOME_WAIT_S = 3.0


def too_big(envelope: Envelope, size: int, max_bytes: int) -> ApiError:
    """413 naming the lot whose event could not travel as one Kafka message."""
    lot_id = getattr(envelope.event, "lot_id", None)
    return ApiError(413, "LOT_TOO_LARGE",
                    f"Lot {lot_id!r} is too large to process ({size} bytes encoded, at most {max_bytes})",
                    details={"lot_id": lot_id, "event_bytes": size, "max_event_bytes": max_bytes})


def copy_rows(topic: str, envelopes: Iterable[Envelope], max_event_bytes: int) -> list[bytes]:
    """The envelopes as COPY text rows, encoded exactly as the relay will publish them.

    An event over `max_event_bytes` refuses the whole request (413 naming its lot): the relay
    could never publish it, and a job must not start without all of its lots.
    """
    lines = []
    for envelope in envelopes:
        payload = encode(envelope)
        if len(payload) > max_event_bytes:
            raise too_big(envelope, len(payload), max_event_bytes)
        lines.append(copy_row((topic, envelope.job_id, envelope.client_id, envelope.type, payload)))
    return lines


InTransaction = Callable[[Connection], None]


@dataclass(frozen=True)
class JobFacts:
    """What the gateway itself accepted about a job (its outbox rows), newest knowledge first."""

    submitted: Envelope | None
    cancelled_at: datetime | None


class Outbox:
    """Appending events and reading a job's own facts back (blocking calls: run them in a thread)."""

    def __init__(self, engine: Engine, metrics: GatewayMetrics, max_event_bytes: int) -> None:
        self._engine = engine
        self._max_event_bytes = max_event_bytes
        self._metrics = metrics
        self._listeners: list[Callable[[], None]] = []

    def on_append(self, listener: Callable[[], None]) -> None:
        """Call `listener` after each committed append (the relay wakes up at once)."""
        self._listeners.append(listener)

    def append(self, topic: str, envelopes: Iterable[Envelope], also: InTransaction | None = None) -> None:
        """Write the events in order, and `also` (e.g. the idempotency answer), in one transaction.

        Raises what failed when nothing was written, `write_unconfirmed` (503) when PostgreSQL
        may have committed it but cannot say."""
        rows = copy_rows(topic, envelopes, self._max_event_bytes)
        with self._engine.connect() as conn:  # left without a commit, it rolls back
            conn.begin()
            transaction_id = conn.execute(_TRANSACTION_ID).scalar_one()
            copy_in(conn, _COPY, rows)
            if also is not None:
                also(conn)
            try:
                conn.commit()
            except DBAPIError as exc:
                # The COMMIT may have been carried out with its answer lost: a 503 for a job that
                # runs, and a resend without an Idempotency-Key made (and paid for) a second one.
                outcome = self._outcome(transaction_id)
                if outcome is None:
                    raise write_unconfirmed() from exc
                if outcome != "committed":
                    raise
                log.warning("the database committed transaction %s, its answer lost: %s", transaction_id, exc)
        self._metrics.db("create")
        for listener in self._listeners:
            listener()


    def _outcome(self, transaction_id: str) -> str | None:
        """"committed" or "aborted" as PostgreSQL reports the transaction on a new connection, or
        None when it cannot say in time (unreachable, or the transaction still in progress)."""
        deadline = time.monotonic() + _OUTCOME_WAIT_S
        while True:
            try:
                with self._engine.connect() as conn:
                    status = conn.execute(_TRANSACTION_STATUS, {"id": transaction_id}).scalar_one()
            except DBAPIError as exc:
                log.warning("cannot ask the database what became of transaction %s: %s", transaction_id, exc)
                status = None
            if status in ("committed", "aborted"):
                return str(status)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)


def unprojected_jobs(conn: Connection, client_id: str) -> list[str]:
    """The client's jobs the gateway accepted whose `jobs` row the result-store has not written yet."""
    query = (select(outbox.c.job_id)
             .where(outbox.c.client_id == client_id, outbox.c.event_type == JobSubmitted.event_type,
                    ~exists().where(jobs.c.job_id == outbox.c.job_id)))
    return [row[0] for row in conn.execute(query)]


def cancelled_unprojected(conn: Connection, client_id: str) -> list[str]:
    """The client's jobs the gateway cancelled whose `jobs` row does not say so yet (still running).

    The client's cancellations first (`ix_outbox_client_events`), then their jobs by key: planned
    as one join, PostgreSQL scanned every client's jobs for the few unfinished ones, at every
    jobs-list request (the whole table, 1.2 million rows after months).
    """
    cancels = (select(outbox.c.job_id).distinct()
               .where(outbox.c.client_id == client_id, outbox.c.event_type == JobCancelled.event_type)
               .cte("cancels").prefix_with("MATERIALIZED"))
    query = select(cancels.c.job_id).where(exists().where(
        jobs.c.job_id == cancels.c.job_id, jobs.c.status.not_in(TERMINAL_JOB_STATUSES)))
    return [row[0] for row in conn.execute(query)]


def facts_of(conn: Connection, job_id: str) -> JobFacts:
    """The job's `JobSubmitted` and earliest cancellation as the gateway wrote them (while kept)."""
    rows = conn.execute(
        select(outbox.c.event_type, outbox.c.payload)
        .where(outbox.c.job_id == job_id,
               outbox.c.event_type.in_([JobSubmitted.event_type, JobCancelled.event_type]))
        .order_by(outbox.c.id)).all()
    submitted: Envelope | None = None
    cancelled_at: datetime | None = None
    for event_type, payload in rows:
        envelope = decode(payload.encode())
        if event_type == JobSubmitted.event_type:
            submitted = submitted or envelope
        elif isinstance(envelope.event, JobCancelled) and cancelled_at is None:
            cancelled_at = envelope.event.cancelled_at
    return JobFacts(submitted, cancelled_at)


# The longest window a request counts its earlier events in (`recorded_in_window`: webhook
# redeliveries, 10 minutes). The relay keeps every published row at least this long, whatever
# LOTLENS_OUTBOX_RETENTION_S says: pruned sooner, the rows a window counts were gone, and at a
# retention of 300 s a job's webhooks could be redelivered every 5 minutes.
LONGEST_WINDOW_S = 600

# A key's events of a type in the window (`ix_outbox_job_events` finds a job's; the partial
# `ix_outbox_client_redeliveries` a client's redelivery requests).
_IN_WINDOW = {column: text(f"""
    SELECT count(*), extract(epoch FROM min(created_at) + make_interval(secs => :window) - now())
      FROM outbox WHERE {column} = :key AND event_type = :type
       AND created_at > now() - make_interval(secs => :window)""") for column in ("job_id", "client_id")}


def recorded_in_window(conn: Connection, by: Literal["job_id", "client_id"], key: str, event_type: str,
                       window_s: float) -> tuple[int, float]:
    """How many `event_type` events of the job or client (`by`) were written in the last
    `window_s` (this transaction's included), and the seconds until the oldest leaves the window.
    Takes the key's lock for that type first: transactions racing for one key count one another."""
    if window_s > LONGEST_WINDOW_S:  # its oldest rows may be pruned: it would count too few
        raise ValueError(f"a window of {window_s} s is longer than rows are kept ({LONGEST_WINDOW_S} s)")
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('lotlens-outbox:' || :type || ':' || :key))"),
                 {"type": event_type, "key": key if by == "job_id" else f"client:{key}"})
    count, wait_s = conn.execute(_IN_WINDOW[by], {"key": key, "type": event_type, "window": window_s}).one()
    return int(count), float(wait_s or 0.0)
