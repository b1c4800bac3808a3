"""Requests whose answer a fault lost (no answer, a 5xx after the client's resends): the job may
or may not exist, the cancel may or may not have taken. Once the faults are over the gateway is
asked, so the invariants judge what happened rather than what the client heard."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from chaos.schedule import JobPlan
from lotlens_client import LotLensClient, LotLensError, RateLimitedError

if TYPE_CHECKING:
    from chaos.workload import Submitted

log = logging.getLogger("chaos")
# The contract's "ask again later" 409: an earlier attempt under the same key is still running.
IN_PROGRESS = "IDEMPOTENCY_KEY_IN_PROGRESS"
TRIES, PAUSE_S = 20, 3.0
T = TypeVar("T")


@dataclass(frozen=True)
class LostSubmission:
    """A job submission without a definite answer, and the Idempotency-Key it was sent with."""

    plan: JobPlan
    lots: list[dict[str, Any]]
    idempotency_key: str | None


def answer_lost(error: LotLensError) -> bool:
    """True when the error does not say whether the request took effect (no answer, a 5xx, or
    the earlier attempt still running); a 4xx refusal says it did not."""
    return error.status is None or error.status >= 500 or error.code == IN_PROGRESS


def resolve(client: LotLensClient, out: Submitted) -> None:
    """Ask the gateway what became of each lost submission (sent again under its key: the first
    job's answer if it was made, else a new job) and each lost cancel (the job's status)."""
    for lost in out.lost_submissions:
        ids = [lot["lot_id"] for lot in lost.lots]
        job_id = _job_of(client, lost)
        if job_id is None:
            out.refused.append(ids)
        else:
            out.accepted[job_id] = (lost.plan, ids)
    out.lost_submissions.clear()
    for job_id in sorted(out.lost_cancels):
        try:
            status = _answered(partial(_status, client, job_id))
        except LotLensError as exc:  # its job was accepted: any refusal here is worth a look
            log.warning("status of %s after a lost cancel: %s", job_id, exc)
            continue
        if status == "cancelled":
            out.cancelled.add(job_id)
    out.lost_cancels.clear()


def _status(client: LotLensClient, job_id: str) -> str:
    return client.job_status(job_id).status


def _job_of(client: LotLensClient, lost: LostSubmission) -> str | None:
    """The job the submission made (None: definitely refused, or never answered)."""
    if lost.idempotency_key is None:
        return None  # the client sent none: the gateway cannot tell, so neither can the run
    try:
        return _answered(lambda: client.submit_job(lost.lots, lost.plan.languages,
                                                   idempotency_key=lost.idempotency_key).job_id)
    except LotLensError as exc:
        log.warning("submission %s refused when asked again: %s", lost.idempotency_key, exc)
        return None


def _answered(ask: Callable[[], T]) -> T | None:
    """The first definite answer within the tries (None when there was none); a 429 or a lost
    answer is asked again, a refusal raised."""
    for _ in range(TRIES):
        try:
            answer = ask()
        except RateLimitedError as exc:
            time.sleep(exc.retry_after or PAUSE_S)
            continue
        except LotLensError as exc:
            if not answer_lost(exc):
                raise
            time.sleep(PAUSE_S)
            continue
        return answer
    log.warning("no definite answer after %d tries", TRIES)
    return None
