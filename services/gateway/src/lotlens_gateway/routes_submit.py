"""`POST /api/v1/generate-descriptions`: one lot answered now, 2 to 50,000 lots accepted as a job.

The body is read and parsed here rather than by FastAPI so that every failure gets the
contract's answer: 413 (size), 400 (JSON), 401/403 (signature), the stored answer or 409
(idempotency key), 429 (rate), 413/409/422 (validation), then 503 when PostgreSQL cannot take the job's one
durable write (the outbox; Kafka plays no part in the answer). A job's body is read only when
the process admits it, and worked on only in one of its intake slots (intake_slots.py): 503
`INTAKE_BUSY` when it is not admitted, or when no slot frees up in time, unless it resends a job
accepted under its `Idempotency-Key` (that job's 201 is replayed). A job body must keep a minimum
rate once its first seconds are over, for a declared length the one that brings it within the
job body timeout (408 under it); one address has at most all admissions but one being read.
Before that, a body from an address with too many bodies refused before authentication gets 429
unread (strikes.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from lotlens_common import tracing
from lotlens_common.logs import bind_log_context
from lotlens_common.lookups import on_behalf_of
from lotlens_gateway import key_lease, schemas
from lotlens_gateway.body import declared_length, drain_body, read_body, refuse_nul
from lotlens_gateway.deps import Deps, GatewayDeps
from lotlens_gateway.errors import ApiError, client_closed
from lotlens_gateway.idempotency import (
    HEADER,
    Replay,
    Reservation,
    ReservationLost,
    check_key,
    header_signature_hash,
    request_hash,
    request_hasher,
    reserve_key,
)
from lotlens_gateway.intake import AcceptedJob, Answer, Estimate, accept_batch
from lotlens_gateway.intake_slots import IntakeBusy
from lotlens_gateway.shutdown import to_the_end
from lotlens_gateway.signed_body import read_signed
from lotlens_gateway.validation import Submission, members_read, parse_submission, rate_mode
from lotlens_gateway.webhook_hosts import refuse_private_webhooks

router = APIRouter(tags=["generation"])

# The caller's trace headers kept with a job's events, each up to a length: every lot's event
# carries them, and a 20,000-character one made 30 kB of outbox per lot. W3C Trace Context:
# traceparent is 55 characters (version 00), tracestate at most 32 members and 512 characters
# are propagated; a longer value is dropped whole (cut, it would be a different one).
_TRACE_HEADERS = {"traceparent": 128, "tracestate": 512, "x-request-id": 128}
log = logging.getLogger(__name__)
T = TypeVar("T")


@router.post(
    "/api/v1/generate-descriptions",
    summary="Describe one lot now, or accept 2 to 50,000 lots as a batch job",
    description=(
        "Body-signed: `signature` (or the `X-Signature` header) is HMAC-SHA256 with the client's key over "
        "`json.dumps(lots, separators=(',', ':'), sort_keys=True)` (or compactly in the body's key order, "
        "JavaScript's `JSON.stringify(lots)`), with or without the `sha256=` prefix. "
        "Exactly one lot is answered synchronously (200, within 300 s, at most 20 images); 2 to 50,000 "
        "lots are accepted as a batch job (201) whose results arrive by polling and per-lot webhooks. "
        "`languages` defaults to `[\"en\"]`, `version` to `\"1.0.0\"`, `additional_info` to `\"\"`. "
        "Unreachable images are listed in `missing_images`; a lot with none reachable ends `failed`. "
        "An optional `Idempotency-Key` header makes retries safe: the same key and body replay the first "
        "answer (header `Idempotent-Replayed: true`), another body under the key is a 409. Rate limits "
        "per client in any 60 s (a sliding window): 100 synchronous, 10 batch requests."),
    status_code=201,
    response_model=schemas.BatchAccepted,
    responses={
        200: {"model": schemas.SyncResult, "description": "Synchronous mode (exactly one lot)"},
        **schemas.error_responses(400, 401, 403, 408, 409, 413, 422, 431, own=schemas.SUBMISSION_ERRORS),
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/SubmissionRequest"}}}}},
)
async def generate_descriptions(
        request: Request, deps: Deps,
        x_signature: Annotated[str | None, Header(
            alias="X-Signature", description="Alternative to the body's `signature`")] = None,
        idempotency_key: Annotated[str | None, Header(alias=HEADER, description=(
            "Optional; the same key and body within 24 h replay the first answer"))] = None,
) -> JSONResponse:
    """Validate, authenticate and either describe the lot or accept the job."""
    # The event loop's clock: a synchronous lot's budget runs from here (SyncDescriber.describe).
    started = asyncio.get_running_loop().time()
    taken = await _take_in(deps, request, x_signature, idempotency_key, started)
    if isinstance(taken, JSONResponse):
        return taken
    # One lot (or a body no bigger than one): its intake place and slot are given back before its
    # model calls, which may take 300 s.
    return await _answer(deps, request, taken, idempotency_key, x_signature, started)


@dataclass(frozen=True)
class _Signed:
    """An authenticated submission: its document, its client, and (when it carries an
    Idempotency-Key) its body's fingerprint; the raw body is not kept."""

    document: dict[str, Any]
    client_id: str
    fingerprint: str | None


async def _take_in(deps: GatewayDeps, request: Request, x_signature: str | None,
                   idempotency_key: str | None, started: float) -> JSONResponse | _Signed:
    """Read the body under the intake's rules (intake_slots.py): a job's is answered in its slot;
    a lot's comes back signed, to be answered outside the intake."""
    declared, address = declared_length(request), request.client.host if request.client else ""
    job_body = deps.intake.takes_slot(declared)
    limit = deps.settings.max_body_bytes
    # A job body keeps a minimum rate whether it is read or dropped: dropped, a trickle held its
    # connection for the whole job body timeout without a strike.
    timeouts = deps.settings.job_body_timeouts(declared) if job_body else deps.settings.body_timeouts()
    struck_out = deps.strikes.refusal(address)
    if struck_out is not None:
        await drain_body(request, limit, timeouts)
        raise struck_out
    async with deps.intake.admit(declared, address) as admitted:
        try:
            if not admitted:
                busy, hasher = deps.intake.refusal(address), request_hasher()  # why, as it is now
                feed = hasher.update if idempotency_key else None
                drained = await drain_body(request, limit, timeouts, feed)
                fingerprint = hasher.hexdigest() if drained else None
            else:
                raw = await read_body(request, limit, timeouts)
                admitted.read()
        except ApiError:
            # A job body refused while read (408, 413, 400) or dropped by its sender (499) held an
            # admission with its client unknown: a strike, as a 403 is. Without it an address could
            # trickle bodies into the admissions for ever and keep every signed job at 503.
            if job_body:
                deps.strikes.record(address)
            raise
        if not admitted:
            return await _replayed_or(deps, idempotency_key, fingerprint, x_signature, busy)
        if not deps.intake.takes_slot(len(raw)):
            document, client_id = await _read_signed(deps, raw, x_signature, address)
            return await _checked(raw, document, client_id, idempotency_key)
        try:
            async with deps.intake.hold():
                document, client_id = await _read_signed(deps, raw, x_signature, address)
                signed = await _checked(raw, document, client_id, idempotency_key)
                if rate_mode(signed.document) == "batch":
                    return await _answer(deps, request, signed, idempotency_key, x_signature, started)
        except IntakeBusy as busy:  # no slot came in time (`hold` alone raises it)
            fingerprint = await run_in_threadpool(request_hash, raw) if idempotency_key else None
            return await _replayed_or(deps, idempotency_key, fingerprint, x_signature, busy)
    # One lot in a body bigger than one (a large field of the client's own beside it) or of
    # unknown size: it kept its slot through its model calls, and with one slot every other
    # client's job got 503 INTAKE_BUSY. Out of the slot it keeps only what validation reads.
    return replace(signed, document=members_read(signed.document))


async def _replayed_or(deps: GatewayDeps, key: str | None, fingerprint: str | None, x_signature: str | None,
                       busy: IntakeBusy) -> JSONResponse:
    """A job body intake could not take in: the 201 of the job accepted for the same key, bytes
    and `X-Signature` header before (a resend after a lost 201), replayed without a slot, or the
    503 `busy`.

    The slot was taken before the key was read, so that resend heard "nothing was written" while
    its job ran. The key is read by the body's fingerprint and the header's
    (`IdempotencyStore.accepted_job`): a body intake does not take is not parsed, so its client
    is not known."""
    if key is not None and fingerprint is not None:
        clients = deps.settings.clients.keys()
        replay = await run_in_threadpool(deps.idempotency.accepted_job, clients, key, fingerprint,
                                         header_signature_hash(x_signature), deps.clock())
        if replay is not None:
            return _replayed(replay)
    raise busy


async def _read_signed(deps: GatewayDeps, raw: bytes, x_signature: str | None,
                       address: str) -> tuple[dict[str, Any], str]:
    """The body read and authenticated; a refusal is a strike against `address`, whatever the
    body's size: an unsigned body of one lot's size costs up to a CPU-second to refuse."""
    try:
        return await run_in_threadpool(read_signed, raw, deps.keys, x_signature, deps.settings.body_limits())
    except ApiError:
        deps.strikes.record(address)
        raise


async def _checked(raw: bytes, document: dict[str, Any], client_id: str,
                   idempotency_key: str | None) -> _Signed:
    """The authenticated body with its strings free of NUL (422), fingerprinted when it carries a key."""
    await run_in_threadpool(refuse_nul, raw, document)
    fingerprint = await run_in_threadpool(request_hash, raw) if idempotency_key is not None else None
    return _Signed(document, client_id, fingerprint)


async def _answer(deps: GatewayDeps, request: Request, signed: _Signed, idempotency_key: str | None,
                  x_signature: str | None, started: float) -> JSONResponse:
    settings = deps.settings
    document, client_id = signed.document, signed.client_id
    mode = rate_mode(document)
    reservation: Reservation | None = None
    if idempotency_key is not None and signed.fingerprint is not None:
        # A retry's stored answer comes before the rate limit and the checks: a client whose 201
        # was lost was refused 429 for up to a minute, and each replay used up its quota.
        key = check_key(idempotency_key)
        held = await reserve_key(deps.idempotency, client_id, key, signed.fingerprint, deps.clock(),
                                 header_signature_hash(x_signature),
                                 settings.idempotency_job_lease_s if mode == "batch" else None)
        if isinstance(held, Replay):
            return _replayed(held)
        reservation = held
    job_id = str(uuid.uuid4())
    with _lease_kept(deps, reservation, mode):
        return await _answer_held(deps, request, signed, reservation, job_id, started)


def _lease_kept(deps: GatewayDeps, reservation: Reservation | None,
                mode: str) -> AbstractContextManager[None]:
    """A job's reservation renewed while its request works (key_lease.py), for at most the long
    lease a synchronous lot's has; a synchronous lot's lease outlasts its budget, and needs none."""
    if reservation is None or mode != "batch":
        return nullcontext()
    settings = deps.settings
    return key_lease.kept(deps.idempotency, reservation, settings.idempotency_job_lease_s,
                          settings.idempotency_lease(), deps.clock)


async def _answer_held(deps: GatewayDeps, request: Request, signed: _Signed, reservation: Reservation | None,
                       job_id: str, started: float) -> JSONResponse:
    settings = deps.settings
    document, client_id = signed.document, signed.client_id
    mode = rate_mode(document)
    try:
        # A synchronous lot holds a place (sync_slots.py) from before it is counted: a 429 for want
        # of one used up a request of the client's rate limit.
        async with _place(deps, client_id, mode):
            await deps.count_request(client_id, mode)
            submission = await run_in_threadpool(parse_submission, document, deps.limits)
            if not submission.is_synchronous:
                with on_behalf_of(client_id):
                    await refuse_private_webhooks(
                        submission.webhook_urls, deps.resolve, settings.allow_loopback_urls,
                        settings.webhook_dns_timeout_s, settings.max_webhook_hosts_checked)
            bind_log_context(job_id=job_id)
            status, body, headers = await _run(deps, request, client_id, submission, job_id, reservation,
                                               started)
    except BaseException:
        if reservation is not None:  # to its end: a reservation left by a cut request made its retry a 409
            await to_the_end(deps.idempotency.release, reservation)
        raise
    if reservation is not None and submission.is_synchronous:
        await _keep_answer(deps, reservation, status, body)
    deps.metrics.generation_requests.labels(mode=mode).inc()
    deps.metrics.generation_duration.labels(mode=mode).observe(asyncio.get_running_loop().time() - started)
    return JSONResponse(body, status_code=status, headers=headers)


def _place(deps: GatewayDeps, client_id: str, mode: str) -> AbstractAsyncContextManager[None]:
    """A synchronous lot's place among the process's and its client's; none for a job."""
    return deps.sync_slots.hold(client_id) if mode == "sync" else nullcontext()


def _replayed(replay: Replay) -> JSONResponse:
    """The stored answer of an earlier request with the key and body, marked as replayed."""
    replayed = {"Idempotent-Replayed": "true"}
    if replay.status_code == 201:  # a 201 without Location names this URI as the job
        replayed["Location"] = _status_url(str(replay.body["job_id"]))
    return JSONResponse(replay.body, status_code=replay.status_code, headers=replayed)


async def _keep_answer(deps: GatewayDeps, reservation: Reservation, status: int,
                       body: dict[str, Any]) -> None:
    """Store a synchronous answer under its key, to the end and then given however the shutdown
    cuts the request meanwhile: cut, the answer was stored in its thread while the client heard
    503 `SHUTTING_DOWN` saying nothing was written (believed, a retry without the key paid again).
    If PostgreSQL fails now, the answer (paid for, in hand) is still given: a 503 threw it away,
    and the retry heard 409 "in progress" until the reservation went stale, then paid again. So
    is it when a resend took the key over meanwhile (its own answer is the one kept)."""
    try:
        await to_the_end(deps.idempotency.complete, reservation, status, body)
    except (SQLAlchemyError, ReservationLost) as exc:
        log.warning("the answer to idempotency key %r could not be stored (%s); answered anyway",
                    reservation.key, exc)


async def _run(deps: GatewayDeps, request: Request, client_id: str, submission: Submission,
               job_id: str, reservation: Reservation | None,
               started: float) -> tuple[int, dict[str, Any], dict[str, str]]:
    if submission.is_synchronous:
        deps.in_flight.runs_to_its_deadline()  # a restart's drain lets it finish: cut, its retry paid again
        with on_behalf_of(client_id):  # its image hosts' lookups: this client's share
            describing = deps.describer.describe(submission, started)
            # Without a key nobody can receive this answer once the client has gone (a retry starts
            # afresh), so its model calls stop; with one, the retry replays it without paying again.
            answer = await (describing if reservation else _unless_client_leaves(request, describing))
        return 200, answer, {}
    settings = deps.settings
    created_at = deps.clock()
    estimate = Estimate(settings.estimate_base_s, settings.estimate_per_lot_s)
    # The caller's trace headers, or (tracing on) this request's span continuing the caller's trace.
    trace = tracing.inject({name: value for name, longest in _TRACE_HEADERS.items()
                            if (value := request.headers.get(name)) is not None and len(value) <= longest})
    job = AcceptedJob(job_id=job_id, client_id=client_id, submission=submission, created_at=created_at,
                      estimated_completion=estimate.completion(created_at, len(submission.lots)), trace=trace)
    body = await to_the_end(accept_batch, job, settings.topics.submissions, deps.outbox,
                            _remembered(deps, reservation))
    return 201, body, {"Location": _status_url(job_id)}


def _status_url(job_id: str) -> str:
    return f"/api/v1/batch-status/{job_id}"


async def _unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result; cancelled (and a 499 for the log) when the client disconnects first."""
    task = asyncio.ensure_future(work)
    left = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, left}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request was cancelled itself: so is its work
        task.cancel()
        raise
    finally:
        left.cancel()
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
        log.info("the client left before its answer: its model calls were stopped")
        raise client_closed("the answer")
    return task.result()


async def _disconnected(request: Request) -> None:
    # The body has been read: the next ASGI message is the disconnect, whenever it comes.
    while (await request.receive())["type"] != "http.disconnect":
        continue


def _remembered(deps: GatewayDeps, reservation: Reservation | None) -> Answer | None:
    """Store the 201 under the idempotency key in the job's own transaction (none without a key)."""
    if reservation is None:
        return None
    held = reservation

    def remember(conn: Connection, body: dict[str, Any]) -> None:
        deps.idempotency.complete_in(conn, held, 201, body)

    return remember
