"""One function per API call: the signed request to send and how to read its answer (no I/O).

`LotLensClient` and `AsyncLotLensClient` only move these `Call`s over HTTP, so the two stay thin
and behave alike: same signing, same parsing, same errors, same retry policy.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode

import httpx2

from lotlens_client import signing
from lotlens_client.errors import (
    LotLensError,
    NetworkError,
    UnexpectedResponseError,
    WaitTimeoutError,
    error_from_response,
    parse_retry_after,
)
from lotlens_client.lot_pages import LotPage
from lotlens_client.models import (
    Cancellation,
    JobAccepted,
    JobPage,
    JobResults,
    JobState,
    JobStatus,
    Json,
    Lot,
    LotResult,
    SyncResult,
    lots_from,
)

T = TypeVar("T")

API = "/api/v1"
SUBMIT_PATH = f"{API}/generate-descriptions"
# The contract answers a synchronous lot within 300 s; leave room for the network.
SYNC_TIMEOUT_S = 310.0
DEFAULT_VERSION = "1.0.0"


@dataclass(frozen=True)
class Call(Generic[T]):
    """A request ready to send, the statuses that count as success, and the parser of their body."""

    method: str
    path: str
    parse: Callable[[int, Any], T]
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    ok: frozenset[int] = frozenset({200})
    timeout_s: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Retry a 429 after its `Retry-After`, and a 503 that has one, at most `max_retries` times and
    `max_wait_s` per wait.

    The gateway answers 503 with `Retry-After` only when it wrote nothing (PostgreSQL down, every
    intake slot taken by other large jobs, or stopping for a restart), so even a submission is safe
    to send again.
    """

    max_retries: int = 3
    max_wait_s: float = 60.0
    default_wait_s: float = 1.0

    def delay(self, status: int, headers: Mapping[str, str], attempt: int) -> float | None:
        """Seconds to wait before retrying attempt number `attempt` (0-based), or None to stop."""
        wait = parse_retry_after(headers.get("retry-after"))
        if status not in (429, 503) or (status == 503 and wait is None) or attempt >= self.max_retries:
            return None
        wait = self.default_wait_s if wait is None else wait
        return wait if wait <= self.max_wait_s else None


def _job_path(template: str, job_id: str) -> str:
    if not job_id:
        raise ValueError("job_id must not be empty")
    return template.format(job_id=quote(job_id, safe=""))


def _job_headers(key: str, job_id: str) -> dict[str, str]:
    return {"X-Signature": signing.sign_job(key, job_id)}


def _submission(key: str, lots: Sequence[Lot], languages: Sequence[str], version: str) -> bytes:
    lot_json = [lot.to_json() for lot in lots]
    payload = {"signature": signing.sign_lots(key, lot_json), "version": version,
               "languages": list(languages), "lots": lot_json}
    return json.dumps(payload, separators=(",", ":")).encode()


def _parse(parser: Callable[[Json], T]) -> Callable[[int, Any], T]:
    def parse(_status: int, body: Any) -> T:
        return parser(body)
    return parse


def describe_lot(key: str, lot: Lot | Json, languages: Sequence[str], version: str = DEFAULT_VERSION,
                 ) -> Call[LotResult]:
    """Submit one lot in synchronous mode; the answer is the described lot."""
    body = _submission(key, lots_from([lot]), languages, version)
    return Call("POST", SUBMIT_PATH, _parse(lambda data: SyncResult.from_json(data).lot),
                {"Content-Type": "application/json"}, body, timeout_s=SYNC_TIMEOUT_S)


def submit_job(key: str, lots: Sequence[Lot | Json], languages: Sequence[str], webhook: str | None = None,
               idempotency_key: str | None = None, version: str = DEFAULT_VERSION) -> Call[JobAccepted]:
    """Submit 2 to 50,000 lots as a batch job; `webhook` applies to every lot without its own."""
    parsed = lots_from(lots)
    if len(parsed) < 2:
        raise ValueError("a batch job needs at least 2 lots; describe a single lot with describe_lot()")
    if webhook:
        parsed = [lot if lot.webhook else Lot(lot.lot_id, lot.additional_info, lot.image_urls, webhook)
                  for lot in parsed]
    # Always a key: a 429 or 503 is retried, and only a key lets the gateway tell a retry from a
    # second job (RFC 9110 9.2.2); the same call keeps it through its retries.
    headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key or str(uuid.uuid4())}
    return Call("POST", SUBMIT_PATH, _parse(JobAccepted.from_json), headers,
                _submission(key, parsed, languages, version), ok=frozenset({201}))


def job_status(key: str, job_id: str) -> Call[JobStatus]:
    """The status and progress of a job."""
    return Call("GET", _job_path(API + "/batch-status/{job_id}", job_id), _parse(JobStatus.from_json),
                _job_headers(key, job_id))


def _results_or_none(status: int, body: Any) -> JobResults | None:
    return None if status == 202 else JobResults.from_json(body)


def job_results(key: str, job_id: str) -> Call[JobResults | None]:
    """The results of a finished job; None (202) while it runs."""
    return Call("GET", _job_path(API + "/batch-results/{job_id}", job_id), _results_or_none,
                _job_headers(key, job_id), ok=frozenset({200, 202}))


def download_results(key: str, job_id: str) -> Call[None]:
    """The results document as a stream (the client writes the body; only errors are parsed)."""
    return Call("GET", _job_path(API + "/batch-results/{job_id}/download", job_id), lambda _s, _b: None,
                _job_headers(key, job_id), ok=frozenset({200, 202}))


def cancel_job(key: str, job_id: str) -> Call[Cancellation]:
    """Cancel a pending or running job (a finished one is a `ValidationError` JOB_NOT_CANCELLABLE)."""
    path = _job_path(API + "/batch-jobs/{job_id}/cancel", job_id)
    return Call("POST", path, _parse(Cancellation.from_json), _job_headers(key, job_id))


def retry_failed(key: str, job_id: str) -> Call[JobAccepted]:
    """Resubmit a finished job's failed lots as a new job (the same new job on every call)."""
    path = _job_path(API + "/batch-jobs/{job_id}/retry-failed", job_id)
    return Call("POST", path, _parse(JobAccepted.from_json), _job_headers(key, job_id),
                ok=frozenset({200, 201}))


def _timestamp(moment: datetime | str) -> str:
    if isinstance(moment, str):
        return moment
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def jobs_query(status: JobState | None = None, limit: int = 10, offset: int = 0,
               created_after: datetime | str | None = None,
               created_before: datetime | str | None = None) -> str:
    """The raw query string of a listing, exactly as sent and signed (naive datetimes are UTC)."""
    pairs: list[tuple[str, str]] = []
    if status is not None:
        pairs.append(("status", status))
    pairs += [("limit", str(limit)), ("offset", str(offset))]
    if created_after is not None:
        pairs.append(("created_after", _timestamp(created_after)))
    if created_before is not None:
        pairs.append(("created_before", _timestamp(created_before)))
    return urlencode(pairs)


def list_jobs(key: str, query: str) -> Call[JobPage]:
    """One page of the client's jobs; `query` comes from `jobs_query`."""
    path = f"{API}/batch-jobs?{query}" if query else f"{API}/batch-jobs"
    return Call("GET", path, _parse(JobPage.from_json), {"X-Signature": signing.sign_query(key, query)})


def lots_query(status: JobState | None = None, limit: int = 100, offset: int = 0) -> str:
    """The query string of a lots page (a lot's statuses are named as a job's)."""
    pairs = [("status", status)] if status is not None else []
    return urlencode([*pairs, ("limit", str(limit)), ("offset", str(offset))])


def list_lots(key: str, job_id: str, query: str) -> Call[LotPage]:
    """One page of a job's lots (signed over the job id); `query` comes from `lots_query`."""
    path = _job_path(API + "/batch-jobs/{job_id}/lots", job_id) + f"?{query}"
    return Call("GET", path, _parse(LotPage.from_json), _job_headers(key, job_id))


def decode(call: Call[T], status: int, content: bytes, headers: Mapping[str, str]) -> T:
    """The parsed answer of a call, or the `LotLensError` its status and body stand for."""
    try:
        body: Any = json.loads(content) if content else None
    except ValueError:
        body = None
        if status in call.ok:
            raise UnexpectedResponseError(status, "INVALID_RESPONSE", "The answer is not JSON",
                                          {"body": content[:500].decode(errors="replace")}) from None
    if status not in call.ok:
        raise error_from_response(status, body, headers)
    try:
        return call.parse(status, body)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnexpectedResponseError(status, "INVALID_RESPONSE",
                                      f"The answer does not have the expected shape ({exc!r})") from exc


def network_error(exc: httpx2.RequestError) -> LotLensError:
    """The `NetworkError` of a request that got no answer."""
    kind = type(exc).__name__
    return NetworkError(None, "NETWORK_ERROR", f"{kind}: {exc}" if str(exc) else kind)


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
