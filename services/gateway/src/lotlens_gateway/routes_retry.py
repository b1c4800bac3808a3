"""`POST /api/v1/batch-jobs/{job_id}/retry-failed`: a finished job's failed lots as a new job."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from lotlens_common import tracing
from lotlens_gateway import schemas, schemas_jobs
from lotlens_gateway.deps import Deps, GatewayDeps, JobClient, JobId
from lotlens_gateway.idempotency import Replay, in_progress, internal_key, reserve_key
from lotlens_gateway.intake import AcceptedJob, Estimate, accept_batch
from lotlens_gateway.retry_failed import (
    check_retryable,
    failed_lots,
    retry_body,
    retry_job_id,
    retry_submission,
)
from lotlens_gateway.shutdown import to_the_end

router = APIRouter(tags=["batch jobs"])
_REPLAYED = {"Idempotent-Replayed": "true"}


@router.post(
    "/api/v1/batch-jobs/{job_id}/retry-failed", response_model=schemas_jobs.RetryAccepted, status_code=201,
    summary="Resubmit a finished job's failed lots as a new job",
    description=("Header-signed like cancel: `X-Signature: sha256=<hex>` over the job id exactly as in the "
                 "path. Only the failed lots are sent again, with the job's languages and webhooks, as a "
                 "new batch job whose `retry_of` names this one (this job's status then shows it in "
                 "`retried_as`). Idempotent: every call for one job names the same new job (201 the first "
                 "time, 200 after). 409 `JOB_NOT_FINISHED` while the job runs, 409 `NO_FAILED_LOTS` when "
                 "nothing failed, 409 `IDEMPOTENCY_KEY_IN_PROGRESS` (with `Retry-After`) while another "
                 "call for the job is making its retry. The call that makes the new job counts against the "
                 "batch rate limit and takes an intake slot (503 `INTAKE_BUSY` when none frees up in time); "
                 "one answered with it (200, no slot needed) or with 409 `IDEMPOTENCY_KEY_IN_PROGRESS` "
                 "does not (each counts as a poll, as every job-addressed call does)."),
    responses={200: {"model": schemas_jobs.RetryAccepted, "description": "The retry job of an earlier call"},
               **schemas.error_responses(401, 403, 404, 429, 503, own={
                   409: "JOB_NOT_FINISHED: the job still runs; NO_FAILED_LOTS: none of its lots failed; "
                        "IDEMPOTENCY_KEY_IN_PROGRESS: another call is making the retry, ask again after "
                        "Retry-After"})})
async def retry_failed(job_id: JobId, client_id: JobClient, deps: Deps) -> JSONResponse:
    """Answer with the retry job, making it on the first call (in an intake slot: it may hold
    as many lots as a submission)."""
    new_id = retry_job_id(job_id)
    # A retry already made is only read: answered before the slot, a repeated call waited behind
    # the big jobs in intake and was refused 503 `INTAKE_BUSY` for a job that existed. Being the
    # client's, it also says the job it retries is theirs.
    earlier = await run_in_threadpool(deps.store.find_job, new_id, client_id)
    if earlier is not None:
        return JSONResponse(retry_body(earlier), headers=_REPLAYED)
    # Made, or being made, by a gateway of the earlier release (a rolling upgrade): not again.
    made = await run_in_threadpool(deps.idempotency.answer_held, client_id, _earlier_release_key(job_id),
                                   new_id, deps.clock())
    if made is not None:
        return JSONResponse(made.body, headers=_REPLAYED)
    # Whose job it is and whether it can be retried, from its row alone, before the slot and the
    # lots: refused only inside, a client looping on its running 50,000-lot job (or on made-up
    # ids, counted as polls) had every failed lot's URLs read and held the process's slot, and
    # other clients' submissions were told 503 `INTAKE_BUSY`.
    check_retryable(await run_in_threadpool(deps.store.job_for_client, job_id, client_id))
    async with deps.intake.hold():
        return await _retry(job_id, new_id, client_id, deps)


async def _retry(job_id: str, new_id: str, client_id: str, deps: GatewayDeps) -> JSONResponse:
    job, failed = await run_in_threadpool(deps.store.job_and, job_id, client_id, failed_lots)
    submission = retry_submission(job, failed or [])
    # Two calls at once: the second is told 409 in progress (a later call replays), no second job;
    # one made since the read above is replayed from the key (answered in the job's transaction).
    # Reserved before the call is counted, as a submission's Idempotency-Key is: counted first, a
    # client asking again while its retry was being made (its first call timed out) used up its
    # batch quota and, at the limit, was told 429 to wait a minute for a job already being made.
    key = internal_key("retry-failed", job_id)
    reservation = await reserve_key(deps.idempotency, client_id, key, new_id, deps.clock())
    if isinstance(reservation, Replay):
        return JSONResponse(reservation.body, headers=_REPLAYED)
    settings, created_at = deps.settings, deps.clock()
    estimate = Estimate(settings.estimate_base_s, settings.estimate_per_lot_s)
    accepted = AcceptedJob(job_id=new_id, client_id=client_id, submission=submission, created_at=created_at,
                           estimated_completion=estimate.completion(created_at, len(submission.lots)),
                           trace=tracing.inject({}), retry_of=job_id)

    def remember(conn: Connection, body: dict[str, Any]) -> None:
        # An earlier release's gateway may have taken the call up since the read before the slot:
        # this write is rolled back (its own answer, or 409 meanwhile, is the next call's).
        old_key = _earlier_release_key(job_id)
        if deps.idempotency.answer_held_in(conn, client_id, old_key, new_id, deps.clock()) is not None:
            raise in_progress(old_key)
        deps.idempotency.complete_in(conn, reservation, 201, body)

    try:
        await deps.count_request(client_id, "batch")
        body = await to_the_end(accept_batch, accepted, settings.topics.submissions, deps.outbox, remember)
    except BaseException:  # a 429 too: the key is free for a call once the window allows one
        await to_the_end(deps.idempotency.release, reservation)
        raise
    return JSONResponse(body, status_code=201, headers={"Location": f"/api/v1/batch-status/{new_id}"})


def _earlier_release_key(job_id: str) -> str:
    """The key a gateway of the release before 3c80d98 reserves for `job_id`'s retry.

    A call to such a gateway and one here, during a rolling upgrade, each held its own spelling
    and wrote the retry twice: its reservation is honoured here (its answer replayed, 409 while
    it is being made) until the last of its rows expires, a key TTL (24 h) after the upgrade.
    """
    return f"retry-failed:{job_id}"
