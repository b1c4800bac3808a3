"""`wait_for_job`'s rules (no I/O): the pause between status polls, which failed polls are polled
again, and how a wait ends at its timeout."""

from __future__ import annotations

import math

from lotlens_client.errors import LotLensError, NetworkError, RateLimitedError, ServerError, WaitTimeoutError
from lotlens_client.models import JobStatus

# Polling faster than this only spends the client's polling rate limit.
MIN_POLL_INTERVAL_S = 0.5


def poll_interval(seconds: float) -> float:
    """The pause between status polls: at least `MIN_POLL_INTERVAL_S`; ValueError when negative."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"poll_interval_s must be a finite number of seconds >= 0, not {seconds}")
    return max(seconds, MIN_POLL_INTERVAL_S)


def passing(error: LotLensError) -> bool:
    """Whether a failed status poll may pass (no answer, a 5xx, a 429 past its retries): a status
    poll changes nothing, and one blip must not end a day's wait."""
    return isinstance(error, NetworkError | ServerError | RateLimitedError)


def poll_again(error: LotLensError, job_id: str, last_seen: JobStatus | None, waited_s: float,
               poll_interval_s: float, timeout_s: float) -> float:
    """Seconds until the next status poll after a poll that failed. An error that is not `passing`
    is raised; a passing one at the timeout ends the wait in `WaitTimeoutError`, caused by it."""
    if not passing(error):
        raise error
    remaining = timeout_s - waited_s
    if remaining <= 0:
        # Raised as the error itself, it escaped callers that catch WaitTimeoutError (TimeoutError)
        # for "the job took too long", and the CLI told nothing of the job that goes on.
        seen = f"; it was {last_seen.status} when last answered" if last_seen is not None else ""
        details = {"job_id": job_id, "last_error": error.code}
        if last_seen is not None:
            details["status"] = last_seen.status
        raise WaitTimeoutError(None, "WAIT_TIMEOUT",
                               f"Job {job_id}: no status poll answered by the end of the {timeout_s:g} s "
                               f"wait (the last: {error.code}: {error.message}){seen}", details) from error
    retry_after = error.retry_after if isinstance(error, RateLimitedError) else None
    return min(max(poll_interval_s, retry_after or 0.0), remaining)


def next_poll(status: JobStatus, waited_s: float, poll_interval_s: float, timeout_s: float) -> float | None:
    """Seconds until the next status poll of `wait_for_job`; None when the job is finished."""
    if status.is_terminal:
        return None
    remaining = timeout_s - waited_s
    if remaining <= 0:
        raise WaitTimeoutError(None, "WAIT_TIMEOUT",
                               f"Job {status.job_id} is still {status.status} after {timeout_s:g} s",
                               {"job_id": status.job_id, "status": status.status})
    return min(poll_interval_s, remaining)
