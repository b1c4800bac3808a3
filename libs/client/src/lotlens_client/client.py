"""`LotLensClient`, the blocking client: the API's methods over httpx2 (`AsyncLotLensClient`,
its asyncio twin, is in `async_client` and importable from here too).

Both sign every request with the client's shared key, raise a `LotLensError` subclass for every
error answer, and send a request again a bounded number of times when that is safe
(`resends.RetryPolicy`: a 429, a 503 with `Retry-After`, a 409 `IDEMPOTENCY_KEY_IN_PROGRESS`, and
a submission with no answer or a proxy's 502/504, under the same Idempotency-Key; a description's
resends all within its deadline). Requests are built and answers parsed by `lotlens_client.calls`;
these classes only move bytes. Pass `transport=` (an `httpx2.MockTransport`, for instance) to
route requests elsewhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx2

from lotlens_client import calls, waits, wire
from lotlens_client.async_client import AsyncLotLensClient
from lotlens_client.calls import Call
from lotlens_client.errors import LotLensError
from lotlens_client.lot_pages import LotPage
from lotlens_client.models import (
    Cancellation,
    JobAccepted,
    JobPage,
    JobResults,
    JobState,
    JobStatus,
    JobSummary,
    Lot,
    LotResult,
)
from lotlens_client.resends import Resends, RetryPolicy
from lotlens_client.walks import JobWalk, LotWalk
from lotlens_client.wire import DEFAULT_TIMEOUT_S, USER_AGENT, ProgressCallback, package_version

# DEFAULT_TIMEOUT_S and ProgressCallback lived here before wire.py: kept for code that imports them.
__all__ = ["DEFAULT_TIMEOUT_S", "USER_AGENT", "AsyncLotLensClient", "LotLensClient", "ProgressCallback",
           "package_version"]

T = TypeVar("T")


class LotLensClient:
    """A blocking client of the LotLens API for one integrator (one shared key)."""

    def __init__(self, base_url: str, client_key: str, *, timeout: float = wire.DEFAULT_TIMEOUT_S,
                 transport: httpx2.BaseTransport | None = None, max_retries: int = 3,
                 max_retry_wait_s: float = 60.0, user_agent: str = wire.USER_AGENT,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._key = client_key
        self._timeout = timeout
        self._retry = RetryPolicy(max_retries, max_retry_wait_s)
        self._sleep = sleep
        self._clock = clock  # deadlines and waits are measured on it
        self._http = httpx2.Client(transport=transport, **wire.http_options(base_url, timeout, user_agent))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    @contextmanager
    def _exchange(self, call: Call[Any]) -> Iterator[httpx2.Response]:
        """The streamed answer to a call, after its retries."""
        resends = Resends(self._retry, call, self._clock)
        response: httpx2.Response | None = None
        while (timeout := resends.timeout(self._timeout)) is not None:
            request = self._http.build_request(call.method, call.path, headers=call.headers,
                                               content=call.body, timeout=timeout)
            try:
                response = self._http.send(request, stream=True)
            except httpx2.RequestError as exc:
                self._sleep(resends.after_no_answer(exc))
                continue
            decides = response.status_code in wire.CODE_DECIDES
            code = calls.error_code(wire.read(response)) if decides else None
            delay = resends.after_answer(response.status_code, response.headers, code)
            if delay is None:
                break
            wire.read(response)  # kept whole: it is the call's answer if the wait takes the deadline
            response.close()
            self._sleep(delay)
        if response is None:  # Resends raises a lost attempt's NetworkError before it ends the loop
            raise RuntimeError("no attempt was made")
        try:
            yield response
        finally:
            response.close()

    def _send(self, call: Call[T]) -> T:
        with calls.naming_key(call), self._exchange(call) as response:
            return calls.decode(call, response.status_code, wire.read(response), response.headers)

    def describe_lot(self, lot: Lot | Mapping[str, Any], languages: Sequence[str] = ("en",), *,
                     version: str = calls.DEFAULT_VERSION, idempotency_key: str | None = None,
                     deadline_s: float | None = calls.DESCRIBE_DEADLINE_S) -> LotResult:
        """Describe one lot now (synchronous mode, at most 20 images, up to 300 s); the same
        `idempotency_key` is answered from the first description, not paid again. Resends and waits
        for an earlier attempt end by `deadline_s` (None: only `max_retries` bounds them)."""
        return self._send(calls.describe_lot(self._key, lot, languages, version, idempotency_key,
                                              deadline_s))

    def submit_job(self, lots: Sequence[Lot | Mapping[str, Any]], languages: Sequence[str] = ("en",),
                   webhook: str | None = None, idempotency_key: str | None = None, *,
                   version: str = calls.DEFAULT_VERSION) -> JobAccepted:
        """Submit 2 to 50,000 lots as a batch job (the same `idempotency_key` never makes two jobs)."""
        return self._send(calls.submit_job(self._key, lots, languages, webhook, idempotency_key, version))

    def job_status(self, job_id: str) -> JobStatus:
        """The status, progress and OpenAI batches of a job."""
        return self._send(calls.job_status(self._key, job_id))

    def job_results(self, job_id: str) -> JobResults | None:
        """Every lot of a finished job; None while the job still runs."""
        return self._send(calls.job_results(self._key, job_id))

    def download_results(self, job_id: str, path: str | os.PathLike[str]) -> Path | None:
        """Stream the results document of a finished job to `path`; None (nothing written) while it runs."""
        call = calls.download_results(self._key, job_id)
        target = Path(path)
        with self._exchange(call) as response:
            if response.status_code != 200:
                calls.decode(call, response.status_code, wire.read(response), response.headers)
                return None
            part = wire.part_file(target)
            try:
                with part.open("wb") as file:
                    for chunk in response.iter_bytes():
                        file.write(chunk)
                part.replace(target)
            except BaseException as exc:  # whatever stopped it, no half-written file stays
                part.unlink(missing_ok=True)
                if isinstance(exc, httpx2.RequestError):
                    raise calls.network_error(exc) from exc
                raise
        return target

    def cancel_job(self, job_id: str) -> Cancellation:
        """Cancel a pending or running job."""
        return self._send(calls.cancel_job(self._key, job_id))

    def retry_failed(self, job_id: str) -> JobAccepted:
        """Resubmit a finished job's failed lots as a new job; calling again names the same job."""
        return self._send(calls.retry_failed(self._key, job_id))

    def list_jobs(self, status: JobState | None = None, limit: int = 10, offset: int = 0,
                  created_after: datetime | str | None = None,
                  created_before: datetime | str | None = None,
                  cursor: str | None = None) -> JobPage:
        """One page (at most 100) of the client's jobs, newest first; with `cursor` (a page's
        `pagination.next_cursor`), the jobs after that page."""
        query = calls.jobs_query(status, limit, offset, created_after, created_before, cursor)
        return self._send(calls.list_jobs(self._key, query))

    def iter_jobs(self, status: JobState | None = None, page_size: int = 100) -> Iterator[JobSummary]:
        """Every job of the client, newest first, fetched page by page; each once, even while jobs
        are created or change state (`walks.JobWalk`)."""
        walk = JobWalk(status)
        while walk.offset is not None:
            try:
                page = self.list_jobs(walk.status_asked, page_size, walk.offset, cursor=walk.cursor)
            except LotLensError as exc:
                if walk.refused(exc):
                    continue
                raise
            yield from walk.take(page)

    def list_lots(self, job_id: str, status: JobState | None = None, limit: int = 100,
                  offset: int = 0) -> LotPage:
        """One page (at most 500 lots, fewer when their bytes fill it) of a job's lots, running jobs too."""
        return self._send(calls.list_lots(self._key, job_id, calls.lots_query(status, limit, offset)))

    def iter_lots(self, job_id: str, status: JobState | None = None,
                  page_size: int = 100, offset: int = 0) -> Iterator[LotResult]:
        """Every lot of a job (in `status`, if given) in request order from `offset` on, page by
        page; none missed while lots change state (`walks.LotWalk`)."""
        walk = LotWalk(status, offset)
        while walk.offset is not None:
            yield from walk.take(self.list_lots(job_id, walk.status_asked, page_size, walk.offset))

    def wait_for_job(self, job_id: str, poll_interval_s: float = 5, timeout_s: float = 3600,
                     on_progress: wire.ProgressCallback | None = None, *,
                     on_poll_failed: wire.PollFailedCallback | None = None) -> JobStatus:
        """Poll until the job is completed, failed or cancelled; `WaitTimeoutError` after `timeout_s`
        (a poll with no answer or a 5xx is told to `on_poll_failed` and polled again after the
        interval; at `timeout_s` it is the `WaitTimeoutError`'s cause)."""
        started, interval = self._clock(), waits.poll_interval(poll_interval_s)
        last_seen: JobStatus | None = None
        while True:
            try:
                status = self.job_status(job_id)
            except LotLensError as exc:
                if on_poll_failed is not None and waits.passing(exc):
                    on_poll_failed(exc)
                waited = self._clock() - started
                self._sleep(waits.poll_again(exc, job_id, last_seen, waited, interval, timeout_s))
                continue
            last_seen = status
            if on_progress is not None:
                on_progress(status)
            delay = waits.next_poll(status, self._clock() - started, interval, timeout_s)
            if delay is None:
                return status
            self._sleep(delay)
