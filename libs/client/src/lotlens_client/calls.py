"""One function per API call: the signed request to send and how to read its answer (no I/O).

`LotLensClient` and `AsyncLotLensClient` only move these `Call`s over HTTP, so the two stay thin
and behave alike: same signing, same parsing, same errors, same retry policy.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlencode

import httpx2

from lotlens_client import signing, waits
from lotlens_client.errors import (
    LotLensError,
    NetworkError,
    UnexpectedResponseError,
    error_from_response,
    outcome_unknown,
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

# Lived here before waits.py: kept for code that imports them from here.
from lotlens_client.waits import MIN_POLL_INTERVAL_S as MIN_POLL_INTERVAL_S
from lotlens_client.waits import next_poll as next_poll
from lotlens_client.waits import poll_interval as poll_interval

T = TypeVar("T")

API = "/api/v1"
SUBMIT_PATH = f"{API}/generate-descriptions"
# The contract answers a synchronous lot within 300 s; leave room for the network.
SYNC_TIMEOUT_S = 310.0
DEFAULT_VERSION = "1.0.0"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# The gateway's limit (`check_key`); header values are sent as ASCII.
MAX_KEY_CHARS = 255
# A description's whole wait, resends included: one description's 300 s and a minute for the
# network and its replay. Without it a hung gateway held the caller 4 x 310 s.
DESCRIBE_DEADLINE_S = 360.0


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
    # Safe to send again when its outcome is unknown (no answer, a proxy's 502/504): a request the
    # gateway does once whatever the number of copies (an Idempotency-Key, or a per-job retry).
    resendable: bool = False
    # Seconds for every attempt and pause together (None: only `RetryPolicy` bounds them).
    deadline_s: float | None = None

    @property
    def idempotency_key(self) -> str | None:
        """The `Idempotency-Key` this call is sent with, if any."""
        return self.headers.get(IDEMPOTENCY_HEADER)


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


def _keyed_headers(idempotency_key: str | None) -> dict[str, str]:
    """JSON headers with an Idempotency-Key: the one given, else a new one. Always a key: a
    submission with no answer, a proxy's 502/504 or a 429/503 is sent again, and only a key lets the
    gateway tell a resend from a second job or a second paid description (RFC 9110 9.2.2); the same
    call keeps it through its resends."""
    key = idempotency_key or str(uuid.uuid4())
    if len(key) > MAX_KEY_CHARS or not (key.isascii() and key.isprintable() and key.strip()):
        raise ValueError(f"idempotency_key must be 1 to {MAX_KEY_CHARS} printable ASCII characters")
    return {"Content-Type": "application/json", IDEMPOTENCY_HEADER: key}


def _parse(parser: Callable[[Json], T]) -> Callable[[int, Any], T]:
    def parse(_status: int, body: Any) -> T:
        return parser(body)
    return parse


def describe_lot(key: str, lot: Lot | Json, languages: Sequence[str], version: str = DEFAULT_VERSION,
                 idempotency_key: str | None = None,
                 deadline_s: float | None = DESCRIBE_DEADLINE_S) -> Call[LotResult]:
    """Submit one lot in synchronous mode; the answer is the described lot (a resend under the same
    key is answered from the gateway's copy: the model is paid once), within `deadline_s`."""
    if deadline_s is not None and not (math.isfinite(deadline_s) and deadline_s > 0):
        raise ValueError(f"deadline_s must be a finite number of seconds > 0, or None, not {deadline_s}")
    body = _submission(key, lots_from([lot]), languages, version)
    return Call("POST", SUBMIT_PATH, _parse(lambda data: SyncResult.from_json(data).lot),
                _keyed_headers(idempotency_key), body, timeout_s=SYNC_TIMEOUT_S, resendable=True,
                deadline_s=deadline_s)


def submit_job(key: str, lots: Sequence[Lot | Json], languages: Sequence[str], webhook: str | None = None,
               idempotency_key: str | None = None, version: str = DEFAULT_VERSION) -> Call[JobAccepted]:
    """Submit 2 to 50,000 lots as a batch job; `webhook` applies to every lot without its own."""
    parsed = lots_from(lots)
    if len(parsed) < 2:
        raise ValueError("a batch job needs at least 2 lots; describe a single lot with describe_lot()")
    if webhook:
        parsed = [lot if lot.webhook else Lot(lot.lot_id, lot.additional_info, lot.image_urls, webhook)
                  for lot in parsed]
    return Call("POST", SUBMIT_PATH, _parse(JobAccepted.from_json), _keyed_headers(idempotency_key),
                _submission(key, parsed, languages, version), ok=frozenset({201}), resendable=True)


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
    # Resendable: the gateway makes one retry job per job, whatever the number of calls.
    return Call("POST", path, _parse(JobAccepted.from_json), _job_headers(key, job_id),
                ok=frozenset({200, 201}), resendable=True)


def _timestamp(moment: datetime | str) -> str:
    if isinstance(moment, str):
        return moment
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def jobs_query(status: JobState | None = None, limit: int = 10, offset: int = 0,
               created_after: datetime | str | None = None,
               created_before: datetime | str | None = None, cursor: str | None = None) -> str:
    """The raw query string of a listing, exactly as sent and signed (naive datetimes are UTC)."""
    pairs: list[tuple[str, str]] = []
    if status is not None:
        pairs.append(("status", status))
    pairs += [("limit", str(limit)), ("offset", str(offset))]
    if created_after is not None:
        pairs.append(("created_after", _timestamp(created_after)))
    if created_before is not None:
        pairs.append(("created_before", _timestamp(created_before)))
    if cursor is not None:
        pairs.append(("cursor", cursor))
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
    except (ValueError, RecursionError):  # RecursionError: arrays nested 100,000 deep
        body = None
        if status in call.ok:
            raise UnexpectedResponseError(status, "INVALID_RESPONSE", "The answer is not JSON",
                                          {"body": content[:500].decode(errors="replace")}) from None
    if status not in call.ok:
        raise error_from_response(status, body, headers)
    try:
        return call.parse(status, body)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
        raise UnexpectedResponseError(status, "INVALID_RESPONSE",
                                      f"The answer does not have the expected shape ({exc!r})") from exc


def error_code(content: bytes) -> str | None:
    """The `code` of an error body, or None when it has none."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return None
    return str(body["code"]) if isinstance(body, dict) and body.get("code") else None


def network_error(exc: httpx2.RequestError) -> LotLensError:
    """The `NetworkError` of a request that got no answer."""
    kind = type(exc).__name__
    return NetworkError(None, "NETWORK_ERROR", f"{kind}: {exc}" if str(exc) else kind)


def got_no_answer(exc: httpx2.RequestError) -> bool:
    """Whether the request was lost on the way (timed out, refused, reset, cut), not malformed."""
    return isinstance(exc, httpx2.TimeoutException | httpx2.NetworkError | httpx2.RemoteProtocolError)


@contextmanager
def naming_key(call: Call[Any]) -> Iterator[None]:
    """Give a `LotLensError` raised inside the call's Idempotency-Key: in `idempotency_key`, and in
    `details` when the request may have been carried out (the caller resends with it)."""
    try:
        yield
    except LotLensError as exc:
        key = call.idempotency_key
        if key is not None:
            exc.idempotency_key = key
            if outcome_unknown(exc):
                exc.details.setdefault("idempotency_key", key)
        raise


def poll_again(error: LotLensError, waited_s: float, poll_interval_s: float, timeout_s: float) -> float:
    """`waits.poll_again` with its former signature: seconds until the next status poll after one
    that failed in passing; the error itself is raised otherwise and once `timeout_s` is up."""
    if not waits.passing(error) or timeout_s - waited_s <= 0:
        raise error
    return waits.poll_again(error, "", None, waited_s, poll_interval_s, timeout_s)


def __getattr__(name: str) -> Any:
    # RetryPolicy lived here before resends.py (the client's docstring named it `calls.RetryPolicy`);
    # resends imports this module, so it is looked up when asked for, not at import.
    if name == "RetryPolicy":
        from lotlens_client.resends import RetryPolicy
        return RetryPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
