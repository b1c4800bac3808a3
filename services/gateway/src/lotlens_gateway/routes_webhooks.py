"""A job's webhook deliveries: every attempt on record, and redelivery on demand."""

from __future__ import annotations

import math
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Connection, select
from starlette.concurrency import run_in_threadpool

from lotlens_common.clock import iso
from lotlens_common.envelope import Envelope
from lotlens_common.events import TERMINAL_JOB_STATUSES, WebhookRedeliveryRequested
from lotlens_common.read_models import JobView, job_deliveries
from lotlens_common.tables import jobs
from lotlens_gateway import schemas, schemas_webhooks
from lotlens_gateway.deps import Deps, JobClient, JobId
from lotlens_gateway.errors import ApiError
from lotlens_gateway.idempotency import HEADER, Replay, Reservation, check_key, request_hash, reserve_key
from lotlens_gateway.json_body import encoded, json_answer
from lotlens_gateway.outbox import InTransaction, recorded_in_window
from lotlens_gateway.query import EMPTY_IS_ABSENT
from lotlens_gateway.shutdown import to_the_end
from lotlens_gateway.views import is_terminal

router = APIRouter(tags=["webhooks"])
# A redelivery sends every URL of the job again (a queue row each): at most one a job, and
# `webhook_redeliveries_per_client` a client, in this window. Unlimited, one client re-sent a
# 50,000-URL job up to its polling limit, 1,000 a minute, and every other client's webhooks queued
# behind; once a job only, it re-sent all of its jobs in a row. Counted from the outbox rows, which
# the relay keeps at least `outbox.LONGEST_WINDOW_S` (no shorter than this window).
REDELIVERY_WINDOW_S = 600
# Result-store projects a cancel seconds after the gateway accepts it.
ENDING_RETRY_AFTER_S = 5
_EVENT = WebhookRedeliveryRequested.event_type


def _within_limits(job_id: str, client_id: str, per_client: int) -> InTransaction:
    """Refuse (429) a second request of the job's redelivery in the window, or one more than
    `per_client` of the client's, in the transaction that records this one (whose own row counts)."""

    def check(conn: Connection) -> None:
        count, wait_s = recorded_in_window(conn, "job_id", job_id, _EVENT, REDELIVERY_WINDOW_S)
        if count > 1:
            raise ApiError(429, "RATE_LIMIT_EXCEEDED", "This job's webhooks were redelivered in the "
                           f"last {REDELIVERY_WINDOW_S // 60} minutes",
                           details={"reason": "redelivered_recently"}, headers=_retry_after(wait_s))
        count, wait_s = recorded_in_window(conn, "client_id", client_id, _EVENT, REDELIVERY_WINDOW_S)
        if count > per_client:
            raise ApiError(429, "RATE_LIMIT_EXCEEDED", f"At most {per_client} jobs' webhooks can be "
                           f"redelivered in {REDELIVERY_WINDOW_S // 60} minutes",
                           details={"reason": "client_redelivered_too_often", "limit": per_client,
                                    "window_s": REDELIVERY_WINDOW_S}, headers=_retry_after(wait_s))

    return check


def _retry_after(wait_s: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(wait_s)))}


def _projected_status(conn: Connection, job: JobView) -> str | None:
    """The job's status in the read models, without the gateway's own outbox facts over it."""
    return conn.execute(select(jobs.c.status).where(jobs.c.job_id == job.job_id)).scalar_one_or_none()


def _still_ending(job: JobView) -> ApiError:
    """409 for a job whose end only the gateway's outbox shows yet (a cancel result-store has not
    projected): the dispatcher builds the webhooks from the read models. Accepted, a redelivery of
    a job they showed running held the dispatcher's consumer, every client's webhooks with it."""
    return ApiError(409, "JOB_ENDING", f"The job's end ({job.status}) is still being recorded; its "
                    "webhooks can be redelivered in a few seconds",
                    details={"job_id": job.job_id, "status": job.status},
                    headers={"Retry-After": str(ENDING_RETRY_AFTER_S)})


_SIGNED = "Header-signed: `X-Signature: sha256=<hex>` over the job id exactly as in the path."


@router.get("/api/v1/batch-jobs/{job_id}/webhooks", response_model=schemas_webhooks.DeliveryList,
            summary="The job's webhook deliveries with every attempt, a page at a time", description=_SIGNED,
            responses=schemas.error_responses(401, 403, 404, 422, 429, 503))
async def list_deliveries(
        job_id: JobId, client_id: JobClient, deps: Deps,
        limit: Annotated[int, EMPTY_IS_ABSENT,
                         Query(ge=1, le=500, description="Page size, at most 500")] = 100,
        offset: Annotated[int, EMPTY_IS_ABSENT,
                          Query(ge=0, le=1_000_000_000, description="Deliveries to skip")] = 0,
) -> Response:
    """Deliveries (one per webhook URL and payload part, per (re)delivery), oldest first. A page:
    whole, a 50,000-URL job's list was 72 MB written in one piece."""

    def read() -> bytes:
        with deps.store.engine.connect() as conn:
            deliveries, total = job_deliveries(conn, job_id, limit, offset)
        more = offset + len(deliveries) < total
        pagination = {"limit": limit, "offset": offset, "total": total, "has_more": more}
        return encoded({"job_id": job_id, "pagination": pagination}, "deliveries", deliveries)

    await run_in_threadpool(deps.store.job_for_client, job_id, client_id)
    body = await run_in_threadpool(read)
    deps.metrics.db("read")
    return json_answer(body)


@router.post("/api/v1/batch-jobs/{job_id}/webhooks/redeliver", status_code=202,
             response_model=schemas_webhooks.RedeliveryAccepted,
             summary="Send a finished job's webhooks again",
             description=(_SIGNED + " For a customer whose endpoint failed: every webhook URL of the "
                          "job gets a new delivery (a new `webhook-id`) with the full retry schedule. "
                          "At most once a job, and by default 10 jobs of a client "
                          "(`LOTLENS_WEBHOOK_REDELIVERIES_PER_CLIENT`), in 10 minutes (429 "
                          "`RATE_LIMIT_EXCEEDED` with `Retry-After`; `details.reason` "
                          "`redelivered_recently` or `client_redelivered_too_often`). "
                          "With an `Idempotency-Key`, a retry of the same request gets the first 202 again "
                          "(`Idempotent-Replayed: true`); the key used for another job is 409. "
                          "Right after a cancel, 409 `JOB_ENDING` with `Retry-After` until the job's "
                          "end is recorded (seconds)."),
             responses=schemas.error_responses(401, 403, 404, 429, 503, own={
                 400: "JOB_NOT_FINISHED: webhooks go when the job finishes; NO_WEBHOOK: no lot named one",
                 409: "JOB_ENDING: the job's cancel is still being recorded, ask again after `Retry-After`; "
                      "IDEMPOTENCY_KEY_REUSED: the key named another request; IDEMPOTENCY_KEY_IN_PROGRESS"}))
async def redeliver(job_id: JobId, client_id: JobClient, deps: Deps,
                    idempotency_key: Annotated[str | None, Header(alias=HEADER)] = None) -> JSONResponse:
    """Record the request (the outbox); the webhook dispatcher schedules the deliveries.

    A retry after a lost 202 heard 429 "retry in 600 s" and never learned its redelivery; a
    retrier honouring that sent every URL of the job again. With a key it gets the 202 again.
    """
    job, projected = await run_in_threadpool(deps.store.job_and, job_id, client_id, _projected_status)
    if not is_terminal(job):
        raise ApiError(400, "JOB_NOT_FINISHED", "Webhooks are sent when the job finishes; "
                       f"current status: {job.status}")
    if not job.webhook_configured:
        raise ApiError(400, "NO_WEBHOOK", "None of the job's lots named a webhook URL")
    if projected not in TERMINAL_JOB_STATUSES:
        raise _still_ending(job)
    reservation: Reservation | None = None
    if idempotency_key is not None:
        fingerprint = request_hash(f"redeliver {job_id}".encode())
        held = await reserve_key(deps.idempotency, client_id, check_key(idempotency_key), fingerprint,
                                 deps.clock())
        if isinstance(held, Replay):
            return JSONResponse(held.body, status_code=held.status_code,
                                headers={"Idempotent-Replayed": "true"})
        reservation = held
    requested_at, redelivery_id = deps.clock(), str(uuid.uuid4())
    answer = {"job_id": job_id, "redelivery_id": redelivery_id, "status": "scheduled",
              "requested_at": iso(requested_at)}
    within_limits = _within_limits(job_id, client_id, deps.settings.webhook_redeliveries_per_client)

    def record(conn: Connection) -> None:
        within_limits(conn)
        if reservation is not None:
            deps.idempotency.complete_in(conn, reservation, 202, answer)

    event = WebhookRedeliveryRequested(job_id=job_id, redelivery_id=redelivery_id,
                                       requested_at=requested_at)
    try:
        await to_the_end(deps.outbox.append, deps.settings.topics.completions,
                         [Envelope(event, client_id=client_id, occurred_at=requested_at)], record)
    except BaseException:
        if reservation is not None:
            await to_the_end(deps.idempotency.release, reservation)
        raise
    return JSONResponse(answer, status_code=202)
