"""`LotLensClient` (blocking) and `AsyncLotLensClient` (asyncio): the same methods over httpx2.

Both sign every request with the client's shared key, raise a `LotLensError` subclass for every
error answer, and send a request again a bounded number of times when that is safe
(`calls.RetryPolicy`: a 429, a 503 with `Retry-After`, a 409 `IDEMPOTENCY_KEY_IN_PROGRESS`, and a
submission with no answer or a proxy's 502/504, under the same Idempotency-Key). Requests are
built and answers parsed by `lotlens_client.calls`; these classes only move bytes. Pass
`transport=` (an `httpx2.MockTransport`, for instance) to route requests elsewhere.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx2

from lotlens_client import calls
from lotlens_client.calls import Call, RetryPolicy
from lotlens_client.errors import LotLensError
from lotlens_client.lot_pages import LotPage, page_after
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

T = TypeVar("T")


def package_version() -> str:
    """The installed version of `lotlens-client`."""
    try:
        return importlib.metadata.version("lotlens-client")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


USER_AGENT = f"lotlens-client/{package_version()}"
DEFAULT_TIMEOUT_S = 30.0
# Answers whose API code decides whether they are retried (calls.RetryPolicy.delay).
_CODE_DECIDES = frozenset({409, 502, 504})
ProgressCallback = Callable[[JobStatus], object]


def _http_options(base_url: str, timeout: float, user_agent: str) -> dict[str, Any]:
    return {"base_url": base_url.rstrip("/"), "timeout": timeout,
            "headers": {"User-Agent": user_agent, "Accept": "application/json"}}


def _part_file(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def _read(response: httpx2.Response) -> bytes:
    try:
        return response.read()
    except httpx2.RequestError as exc:  # DecodingError too: not a TransportError
        raise calls.network_error(exc) from exc


async def _aread(response: httpx2.Response) -> bytes:
    try:
        return await response.aread()
    except httpx2.RequestError as exc:
        raise calls.network_error(exc) from exc


class LotLensClient:
    """A blocking client of the LotLens API for one integrator (one shared key)."""

    def __init__(self, base_url: str, client_key: str, *, timeout: float = DEFAULT_TIMEOUT_S,
                 transport: httpx2.BaseTransport | None = None, max_retries: int = 3,
                 max_retry_wait_s: float = 60.0, user_agent: str = USER_AGENT,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._key = client_key
        self._timeout = timeout
        self._retry = RetryPolicy(max_retries, max_retry_wait_s)
        self._sleep = sleep
        self._http = httpx2.Client(transport=transport, **_http_options(base_url, timeout, user_agent))

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
        attempt = 0
        while True:
            # A synchronous description may take 300 s: its timeout is never below that.
            timeout = max(call.timeout_s or 0.0, self._timeout)
            request = self._http.build_request(call.method, call.path, headers=call.headers,
                                               content=call.body, timeout=timeout)
            try:
                response = self._http.send(request, stream=True)
            except httpx2.RequestError as exc:
                self._sleep(self._retry.after_no_answer(call, exc, attempt))
                attempt += 1
                continue
            code = calls.error_code(_read(response)) if response.status_code in _CODE_DECIDES else None
            delay = self._retry.delay(response.status_code, response.headers, attempt, code, call.resendable)
            if delay is None:
                try:
                    yield response
                finally:
                    response.close()
                return
            response.close()
            attempt += 1
            self._sleep(delay)

    def _send(self, call: Call[T]) -> T:
        with calls.naming_key(call), self._exchange(call) as response:
            return calls.decode(call, response.status_code, _read(response), response.headers)

    def describe_lot(self, lot: Lot | Mapping[str, Any], languages: Sequence[str] = ("en",), *,
                     version: str = calls.DEFAULT_VERSION, idempotency_key: str | None = None) -> LotResult:
        """Describe one lot now (synchronous mode, at most 20 images, up to 300 s); the same
        `idempotency_key` is answered from the first description, not paid again."""
        return self._send(calls.describe_lot(self._key, lot, languages, version, idempotency_key))

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
                calls.decode(call, response.status_code, _read(response), response.headers)
                return None
            part = _part_file(target)
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
                  created_before: datetime | str | None = None) -> JobPage:
        """One page (at most 100) of the client's jobs, newest first."""
        query = calls.jobs_query(status, limit, offset, created_after, created_before)
        return self._send(calls.list_jobs(self._key, query))

    def iter_jobs(self, status: JobState | None = None, page_size: int = 100) -> Iterator[JobSummary]:
        """Every job of the client, newest first, fetched page by page."""
        offset = 0
        while True:
            page = self.list_jobs(status, page_size, offset)
            yield from page.jobs
            if not page.pagination.has_more or not page.jobs:
                return
            offset += len(page.jobs)

    def list_lots(self, job_id: str, status: JobState | None = None, limit: int = 100,
                  offset: int = 0) -> LotPage:
        """One page (at most 500 lots, fewer when their bytes fill it) of a job's lots, running jobs too."""
        return self._send(calls.list_lots(self._key, job_id, calls.lots_query(status, limit, offset)))

    def iter_lots(self, job_id: str, status: JobState | None = None,
                  page_size: int = 100, offset: int = 0) -> Iterator[LotResult]:
        """Every lot of a job (in `status`, if given) in request order from `offset` on, page by page."""
        at: int | None = offset
        while at is not None:
            page = self.list_lots(job_id, status, page_size, at)
            yield from page.lots
            at = page_after(page, at)

    def wait_for_job(self, job_id: str, poll_interval_s: float = 5, timeout_s: float = 3600,
                     on_progress: ProgressCallback | None = None) -> JobStatus:
        """Poll until the job is completed, failed or cancelled; `WaitTimeoutError` after `timeout_s`
        (a poll with no answer or a 5xx is polled again after the interval, until then)."""
        started, interval = time.monotonic(), calls.poll_interval(poll_interval_s)
        while True:
            try:
                status = self.job_status(job_id)
            except LotLensError as exc:
                self._sleep(calls.poll_again(exc, time.monotonic() - started, interval, timeout_s))
                continue
            if on_progress is not None:
                on_progress(status)
            delay = calls.next_poll(status, time.monotonic() - started, interval, timeout_s)
            if delay is None:
                return status
            self._sleep(delay)


class AsyncLotLensClient:
    """An asyncio client of the LotLens API with the same methods as `LotLensClient`."""

    def __init__(self, base_url: str, client_key: str, *, timeout: float = DEFAULT_TIMEOUT_S,
                 transport: httpx2.AsyncBaseTransport | None = None, max_retries: int = 3,
                 max_retry_wait_s: float = 60.0, user_agent: str = USER_AGENT,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._key = client_key
        self._timeout = timeout
        self._retry = RetryPolicy(max_retries, max_retry_wait_s)
        self._sleep = sleep
        self._http = httpx2.AsyncClient(transport=transport, **_http_options(base_url, timeout, user_agent))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    @asynccontextmanager
    async def _exchange(self, call: Call[Any]) -> AsyncIterator[httpx2.Response]:
        """The streamed answer to a call, after its retries."""
        attempt = 0
        while True:
            # A synchronous description may take 300 s: its timeout is never below that.
            timeout = max(call.timeout_s or 0.0, self._timeout)
            request = self._http.build_request(call.method, call.path, headers=call.headers,
                                               content=call.body, timeout=timeout)
            try:
                response = await self._http.send(request, stream=True)
            except httpx2.RequestError as exc:
                await self._sleep(self._retry.after_no_answer(call, exc, attempt))
                attempt += 1
                continue
            code = calls.error_code(await _aread(response)) if response.status_code in _CODE_DECIDES else None
            delay = self._retry.delay(response.status_code, response.headers, attempt, code, call.resendable)
            if delay is None:
                try:
                    yield response
                finally:
                    await response.aclose()
                return
            await response.aclose()
            attempt += 1
            await self._sleep(delay)

    async def _send(self, call: Call[T]) -> T:
        with calls.naming_key(call):
            async with self._exchange(call) as response:
                return calls.decode(call, response.status_code, await _aread(response), response.headers)

    async def describe_lot(self, lot: Lot | Mapping[str, Any], languages: Sequence[str] = ("en",), *,
                           version: str = calls.DEFAULT_VERSION, idempotency_key: str | None = None,
                           ) -> LotResult:
        """Describe one lot now (synchronous mode, at most 20 images, up to 300 s); the same
        `idempotency_key` is answered from the first description, not paid again."""
        return await self._send(calls.describe_lot(self._key, lot, languages, version, idempotency_key))

    async def submit_job(self, lots: Sequence[Lot | Mapping[str, Any]], languages: Sequence[str] = ("en",),
                         webhook: str | None = None, idempotency_key: str | None = None, *,
                         version: str = calls.DEFAULT_VERSION) -> JobAccepted:
        """Submit 2 to 50,000 lots as a batch job (the same `idempotency_key` never makes two jobs)."""
        call = calls.submit_job(self._key, lots, languages, webhook, idempotency_key, version)
        return await self._send(call)

    async def job_status(self, job_id: str) -> JobStatus:
        """The status, progress and OpenAI batches of a job."""
        return await self._send(calls.job_status(self._key, job_id))

    async def job_results(self, job_id: str) -> JobResults | None:
        """Every lot of a finished job; None while the job still runs."""
        return await self._send(calls.job_results(self._key, job_id))

    async def download_results(self, job_id: str, path: str | os.PathLike[str]) -> Path | None:
        """Stream the results document of a finished job to `path`; None (nothing written) while it runs."""
        call = calls.download_results(self._key, job_id)
        target = Path(path)
        async with self._exchange(call) as response:
            if response.status_code != 200:
                calls.decode(call, response.status_code, await _aread(response), response.headers)
                return None
            part = _part_file(target)
            # File writes go to a worker thread: a large document must not stall the event loop.
            file = await asyncio.to_thread(part.open, "wb")
            try:
                async for chunk in response.aiter_bytes():
                    await asyncio.to_thread(file.write, chunk)
            except BaseException as exc:  # whatever stopped it, no half-written file stays
                file.close()
                part.unlink(missing_ok=True)
                if isinstance(exc, httpx2.RequestError):
                    raise calls.network_error(exc) from exc
                raise
            await asyncio.to_thread(file.close)
            part.replace(target)
        return target

    async def cancel_job(self, job_id: str) -> Cancellation:
        """Cancel a pending or running job."""
        return await self._send(calls.cancel_job(self._key, job_id))

    async def retry_failed(self, job_id: str) -> JobAccepted:
        """Resubmit a finished job's failed lots as a new job; calling again names the same job."""
        return await self._send(calls.retry_failed(self._key, job_id))

    async def list_jobs(self, status: JobState | None = None, limit: int = 10, offset: int = 0,
                        created_after: datetime | str | None = None,
                        created_before: datetime | str | None = None) -> JobPage:
        """One page (at most 100) of the client's jobs, newest first."""
        query = calls.jobs_query(status, limit, offset, created_after, created_before)
        return await self._send(calls.list_jobs(self._key, query))

    async def iter_jobs(self, status: JobState | None = None,
                        page_size: int = 100) -> AsyncIterator[JobSummary]:
        """Every job of the client, newest first, fetched page by page."""
        offset = 0
        while True:
            page = await self.list_jobs(status, page_size, offset)
            for job in page.jobs:
                yield job
            if not page.pagination.has_more or not page.jobs:
                return
            offset += len(page.jobs)

    async def list_lots(self, job_id: str, status: JobState | None = None, limit: int = 100,
                        offset: int = 0) -> LotPage:
        """One page (at most 500 lots, fewer when their bytes fill it) of a job's lots, running jobs too."""
        return await self._send(calls.list_lots(self._key, job_id, calls.lots_query(status, limit, offset)))

    async def iter_lots(self, job_id: str, status: JobState | None = None,
                        page_size: int = 100, offset: int = 0) -> AsyncIterator[LotResult]:
        """Every lot of a job (in `status`, if given) in request order from `offset` on, page by page."""
        at: int | None = offset
        while at is not None:
            page = await self.list_lots(job_id, status, page_size, at)
            for lot in page.lots:
                yield lot
            at = page_after(page, at)

    async def wait_for_job(self, job_id: str, poll_interval_s: float = 5, timeout_s: float = 3600,
                           on_progress: ProgressCallback | None = None) -> JobStatus:
        """Poll until the job is completed, failed or cancelled; `WaitTimeoutError` after `timeout_s`
        (a poll with no answer or a 5xx is polled again after the interval, until then)."""
        started, interval = time.monotonic(), calls.poll_interval(poll_interval_s)
        while True:
            try:
                status = await self.job_status(job_id)
            except LotLensError as exc:
                await self._sleep(calls.poll_again(exc, time.monotonic() - started, interval, timeout_s))
                continue
            if on_progress is not None:
                on_progress(status)
            delay = calls.next_poll(status, time.monotonic() - started, interval, timeout_s)
            if delay is None:
                return status
            await self._sleep(delay)
