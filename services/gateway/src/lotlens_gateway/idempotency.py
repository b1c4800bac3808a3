"""`Idempotency-Key`: a retried submission gets the first answer instead of a second job.

A key is reserved (row without a response) before the work and completed with the answer after
it; the same client, key and body replay that answer, another body under the key is a 409.
Only successful answers are kept: a failed attempt releases the key so the client may retry.
A reservation whose request died (gateway killed) is taken over after `stale_after_s`. Keys
live at least `ttl_s` (24 h by default); past that the same key and body are a new request, and
a new job. A job's outbox rows and its key's answer are written in one transaction, so a retry
after a crash finds either the answer to replay or no job at all.

A request still running when its reservation is taken over writes nothing: its answer is stored
only while the reservation is still its own, in the job's transaction, so of the slow request
and its resend only one job is written (the other hears 409, nothing written). The answer's
store was unconditional, and both wrote a job.

A job's lease is short (a dead request's key is free again in seconds), so its request renews
the reservation while it works (`key_lease.py`): the lease runs from the last renewal, by the
database's clock (`renewed_at`), never a gateway's. Run from the reservation, an intake slower
than the client's timeout lost its key to the resend, which lost it to the next: nothing was
ever written. Measured on each gateway's clock, a replica whose clock ran ahead took keys early.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, RowMapping, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert

from lotlens_common import signing
from lotlens_common.tables import idempotency_keys as keys
from lotlens_gateway.errors import ApiError
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.shutdown import finish

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
# Expired keys are purged by about one request in this many.
_PURGE_ONE_IN = 100
# What RFC 9110 (5.5) lets no field value hold: the line break joins an internal key's parts.
_NOT_IN_HEADERS = frozenset("\r\n\0")
# Reservations tried while the key's holders keep releasing it between our insert and our read.
_RESERVE_ATTEMPTS = 3
# Seconds since the request holding a reservation last said it is alive, by the database's clock.
_SILENT_S = func.extract("epoch", func.now() - func.coalesce(keys.c.renewed_at, keys.c.created_at))


@dataclass(frozen=True)
class Reservation:
    """A key held for one request until its answer is stored or it is released.

    `taken_at` is the row's `created_at`: a takeover rewrites it (always later, past the lease),
    so it tells this request's reservation from the one that took it over.
    """

    client_id: str
    key: str
    taken_at: datetime


@dataclass(frozen=True)
class Replay:
    """The stored answer of an earlier request with the same key and body."""

    status_code: int
    body: dict[str, Any]


def request_hash(body: bytes) -> str:
    """The fingerprint a key is bound to: SHA-256 of the raw body."""
    return request_hasher(body).hexdigest()


def request_hasher(body: bytes = b"") -> hashlib._Hash:
    """`request_hash` for a body fed in chunks as it streams (`hexdigest()` once it is all in)."""
    return hashlib.sha256(body)


def header_signature_hash(x_signature: str | None) -> str:
    """SHA-256 of a submission's `X-Signature` digest ("" without one), kept with its key: a job
    resent while intake is busy is replayed only to a request that carries it (`accepted_job`).
    Hashed as the signature check reads it (prefix, case and spaces dropped): hashed as sent, the
    client's own resend as `sha256=<HEX>` instead of bare hex was refused 503 where a slot replays."""
    digest = signing.signature_digest(x_signature.strip()) if x_signature and x_signature.strip() else ""
    return hashlib.sha256(digest.encode()).hexdigest()


def in_progress(key: str) -> ApiError:
    """409: a request holding the key is still being answered (Retry-After 5)."""
    return ApiError(409, "IDEMPOTENCY_KEY_IN_PROGRESS",
                    f"A request with this {HEADER} is still being processed; retry later",
                    details={"idempotency_key": key}, headers={"Retry-After": "5"})


class ReservationLost(ApiError):
    """409: a resend took the key over while this request ran; this request's write is rolled back."""

    def __init__(self, key: str) -> None:
        super().__init__(409, "IDEMPOTENCY_KEY_IN_PROGRESS",
                         f"This request ran past its hold on the {HEADER} and a resend took the key over; "
                         "nothing was written by this request. Retry later for the resend's answer",
                         details={"idempotency_key": key}, headers={"Retry-After": "5"})


def check_key(key: str) -> str:
    """The key as given, or 422 when it is empty, too long or holds a line break (`internal_key`)."""
    if not key.strip() or len(key) > MAX_KEY_CHARS or not _NOT_IN_HEADERS.isdisjoint(key):
        raise ApiError(422, "VALIDATION_ERROR", f"{HEADER} must be 1 to {MAX_KEY_CHARS} characters "
                       "with no line break", details={"errors": [
                           {"field": HEADER, "problem": "empty, too long or with a line break"}]})
    return key


def internal_key(purpose: str, subject: str) -> str:
    """A key the gateway holds for itself (a retry of `subject`'s failed lots, say), in the
    client's table yet never one a client sends: joined by a line break, which `check_key`
    refuses (HTTP carries none in a header anyway). `retry-failed:<job id>` was a client's key
    too: sent with a submission, it made the job's retry a 409 for a day."""
    return f"{purpose}\n{subject}"


async def reserve_key(store: IdempotencyStore, client_id: str, key: str, fingerprint: str,
                      now: datetime, header_signature: str | None = None,
                      lease_s: float | None = None) -> Reservation | Replay:
    """`store.reserve` in a thread, awaited to its end; a request cut by the shutdown meanwhile
    releases what the thread reserved, then stays cut (503 `SHUTTING_DOWN`, its write not begun).

    The reservation went on in its thread after the cut and stayed held: the client's retry to
    another gateway heard 409 `IDEMPOTENCY_KEY_IN_PROGRESS` until the reservation went stale."""
    reserving, cuts = await finish(store.reserve, client_id, key, fingerprint, now, header_signature, lease_s)
    if not cuts:
        return reserving.result()
    reserved = reserving.result() if reserving.exception() is None else None
    if isinstance(reserved, Reservation):  # reserved for this request
        releasing, _ = await finish(store.release, reserved)
        if releasing.exception() is not None:
            log.warning("a request cut while reserving idempotency key %r left it held until stale: %s",
                        key, releasing.exception())
    raise asyncio.CancelledError


class IdempotencyStore:
    """Reservations and stored answers in the `idempotency_keys` table (blocking calls)."""

    def __init__(self, engine: Engine, ttl_s: int, stale_after_s: float, metrics: GatewayMetrics) -> None:
        self._engine = engine
        self._ttl = timedelta(seconds=ttl_s)
        self._stale = timedelta(seconds=stale_after_s)
        self._metrics = metrics

    def reserve(self, client_id: str, key: str, fingerprint: str, now: datetime,
                header_signature: str | None = None, lease_s: float | None = None) -> Reservation | Replay:
        """Reserve the key for this request, or the stored answer to replay; 409 on misuse.
        A submission's `header_signature` (`header_signature_hash`) is kept for `accepted_job`.
        An unanswered reservation of the same body is taken over once not renewed for `lease_s`
        (default: the store's `stale_after_s`): the same body is the same kind of request, with
        the same lease."""
        stale_after = self._stale if lease_s is None else timedelta(seconds=lease_s)
        if random.randrange(_PURGE_ONE_IN) == 0:
            self._purge(now)
        with self._engine.begin() as conn:
            row = self._reserved_or_held(conn, client_id, key, fingerprint, header_signature, now)
            if row is None:
                return Reservation(client_id, key, now)
            expired = row["created_at"] < now - self._ttl
            stale = row["status_code"] is None and row["silent_s"] > stale_after.total_seconds()
            if expired or (stale and row["request_hash"] == fingerprint):
                conn.execute(update(keys).where(keys.c.client_id == client_id, keys.c.key == key)
                             .values(request_hash=fingerprint, status_code=None, response_body=None,
                                     created_at=now, renewed_at=func.now(),
                                     header_signature_sha256=header_signature))
                self._metrics.db("update")
                return Reservation(client_id, key, now)
        if row["request_hash"] != fingerprint:
            raise ApiError(409, "IDEMPOTENCY_KEY_REUSED",
                           f"This {HEADER} was already used with a different request body",
                           details={"idempotency_key": key})
        if row["status_code"] is None:
            raise in_progress(key)
        return Replay(int(row["status_code"]), dict(row["response_body"]))

    def _reserved_or_held(self, conn: Connection, client_id: str, key: str, fingerprint: str,
                          header_signature: str | None, now: datetime) -> RowMapping | None:
        """Insert the reservation (None), or the row that holds the key, locked for the caller."""
        for _ in range(_RESERVE_ATTEMPTS):
            inserted = conn.execute(
                insert(keys).values(client_id=client_id, key=key, request_hash=fingerprint, created_at=now,
                                    renewed_at=func.now(), header_signature_sha256=header_signature)
                .on_conflict_do_nothing(index_elements=["client_id", "key"]).returning(keys.c.key)).first()
            self._metrics.db("create")
            if inserted is not None:
                return None
            row = conn.execute(select(keys, _SILENT_S.label("silent_s"))
                               .where(keys.c.client_id == client_id, keys.c.key == key)
                               .with_for_update()).mappings().first()
            self._metrics.db("read")
            if row is not None:
                return row
            # Released between the two statements (its request failed): the key is free again, and
            # the insert is tried anew. Read with `one()`, that release was a 500.
        raise in_progress(key)

    def accepted_job(self, client_ids: Collection[str], key: str, fingerprint: str, header_signature: str,
                     now: datetime) -> Replay | None:
        """The 201 of a job accepted for a request with this key, these exact bytes and this
        `X-Signature` header (`header_signature_hash`), from one of these clients (None when there
        is none, or more than one).

        For a job body intake does not take: its client is known only from its signature, which
        takes the parse an intake slot bounds the memory of. The same bytes and header carry the
        same signatures, so they are the client's again (as a resend through a slot would verify).
        Matched on the bytes alone, a job signed by the header was answered to another client
        sending its exact body and key (a key derived from the body): A's 201 and job id, and no
        job made for B. A row of an earlier release (NULL) matches no request.
        """
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(keys.c.response_body)
                .where(keys.c.client_id.in_(list(client_ids)), keys.c.key == key,
                       keys.c.request_hash == fingerprint, keys.c.header_signature_sha256 == header_signature,
                       keys.c.status_code == 201, keys.c.created_at >= now - self._ttl).limit(2)).all()
        self._metrics.db("read")
        return Replay(201, dict(rows[0].response_body)) if len(rows) == 1 else None

    def answer_held(self, client_id: str, key: str, fingerprint: str, now: datetime) -> Replay | None:
        """`answer_held_in` on a connection of its own."""
        with self._engine.connect() as conn:
            return self.answer_held_in(conn, client_id, key, fingerprint, now)

    def answer_held_in(self, conn: Connection, client_id: str, key: str, fingerprint: str,
                       now: datetime) -> Replay | None:
        """The answer stored under the key for this request, read and never reserved; 409 in
        progress while a live request holds it unanswered; None when it is free, expired, another
        request's or a dead request's. For a key an earlier release spelled otherwise."""
        silent_s = _SILENT_S.label("silent_s")
        row = conn.execute(select(keys.c.status_code, keys.c.response_body, silent_s).where(
            keys.c.client_id == client_id, keys.c.key == key, keys.c.request_hash == fingerprint,
            keys.c.created_at >= now - self._ttl)).first()
        self._metrics.db("read")
        if row is None or (row.status_code is None and row.silent_s > self._stale.total_seconds()):
            return None
        if row.status_code is None:
            raise in_progress(key)
        return Replay(int(row.status_code), dict(row.response_body))

    def complete(self, reservation: Reservation, status_code: int, body: dict[str, Any]) -> None:
        """Store the answer to replay; `ReservationLost` when a resend took the key over."""
        with self._engine.begin() as conn:
            self.complete_in(conn, reservation, status_code, body)

    def complete_in(self, conn: Connection, reservation: Reservation, status_code: int,
                    body: dict[str, Any]) -> None:
        """Store the answer to replay within the caller's transaction (the job's outbox write);
        `ReservationLost`, which rolls that write back, when a resend took the key over."""
        stored = conn.execute(update(keys).where(*_held_by(reservation))
                              .values(status_code=status_code, response_body=body))
        self._metrics.db("update")
        if stored.rowcount == 0:
            raise ReservationLost(reservation.key)

    def renew(self, reservation: Reservation) -> bool:
        """Say the reservation's request is alive (its lease runs from now, the database's now);
        False once it is not held any more (answered, released or taken over)."""
        with self._engine.begin() as conn:
            renewed = conn.execute(update(keys).where(*_held_by(reservation)).values(renewed_at=func.now()))
        self._metrics.db("update")
        return renewed.rowcount == 1

    def release(self, reservation: Reservation) -> None:
        """Forget an unanswered reservation (the request failed; a retry may run afresh); one
        taken over is the resend's, and stays."""
        with self._engine.begin() as conn:
            conn.execute(delete(keys).where(*_held_by(reservation)))
        self._metrics.db("delete")

    def _purge(self, now: datetime) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(keys).where(keys.c.created_at < now - self._ttl))
        self._metrics.db("delete")


def _held_by(reservation: Reservation) -> tuple[ColumnElement[bool], ...]:
    """The key's row while it is still this reservation's: unanswered and not taken over."""
    return (keys.c.client_id == reservation.client_id, keys.c.key == reservation.key,
            keys.c.created_at == reservation.taken_at, keys.c.status_code.is_(None))
