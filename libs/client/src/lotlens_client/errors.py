"""Exceptions raised by the LotLens client. Every one is a `LotLensError`:

    LotLensError                  status, code, message, details
    ├── AuthenticationError       401 MISSING_SIGNATURE, 403 INVALID_SIGNATURE
    ├── NotFoundError             404 JOB_NOT_FOUND (unknown job, or another client's)
    ├── ValidationError           400 INVALID_JSON / JOB_NOT_CANCELLABLE, 409, 413, 422
    ├── RateLimitedError          429, `retry_after` seconds (after the client's own retries)
    ├── ServerError               5xx: 502/504 OpenAI, 503 PostgreSQL down or the gateway busy
    ├── NetworkError              no answer: connection refused, timeout (`status` is None)
    ├── UnexpectedResponseError   an answer that is not the contract's JSON
    └── WaitTimeoutError          `wait_for_job` ran out of time (also a `TimeoutError`); when the
                                  last poll failed, that error is its `__cause__`

`code` is the API's machine-readable code (e.g. `INVALID_SIGNATURE`); `details` the facts behind
it (e.g. `invalid_urls`). Answers without a `code` get `HTTP_<status>`. An error of a request that
carried an `Idempotency-Key` names it in `idempotency_key` (and, when the request may have been
carried out, in `details` too): sending the request again with that key never does it twice.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Any

__all__ = [
    "AuthenticationError",
    "LotLensError",
    "NetworkError",
    "NotFoundError",
    "RateLimitedError",
    "ServerError",
    "UnexpectedResponseError",
    "ValidationError",
    "WaitTimeoutError",
    "error_from_response",
    "outcome_unknown",
    "parse_retry_after",
]

# 409 of a request whose Idempotency-Key another request (an earlier attempt of this one) still holds.
KEY_IN_PROGRESS = "IDEMPOTENCY_KEY_IN_PROGRESS"


class LotLensError(Exception):
    """An error answer of the LotLens API (or the lack of one)."""

    def __init__(self, status: int | None, code: str, message: str,
                 details: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{status or '-'} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        # The Idempotency-Key the request was sent with (None without one): resend with it.
        self.idempotency_key: str | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickles as `cls(*args)`, and `args` is the one formatted line: unpickling (a
        # process pool, a task queue) raised TypeError. Rebuilt bare, then given its attributes.
        return _restore, (type(self), self.args), self.__dict__


def _restore(cls: type[LotLensError], args: tuple[Any, ...]) -> LotLensError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    return error


class AuthenticationError(LotLensError):
    """401 (no signature) or 403 (no client's key verifies it): check the shared key."""


class NotFoundError(LotLensError):
    """404: the job does not exist or belongs to another client."""


class ValidationError(LotLensError):
    """400, 409, 413 or 422: the request was refused as it stands; `details` says why.

    Except 409 `IDEMPOTENCY_KEY_IN_PROGRESS`, raised only once its retries are used up: an earlier
    attempt with the same key is still being carried out; ask again with the key later."""


class RateLimitedError(LotLensError):
    """429: the client's per-minute limit is used up; retry after `retry_after` seconds."""

    def __init__(self, status: int | None, code: str, message: str,
                 details: Mapping[str, Any] | None = None, retry_after: float | None = None) -> None:
        super().__init__(status, code, message, details)
        self.retry_after = retry_after


class ServerError(LotLensError):
    """5xx: the service or one of its dependencies failed; the request may be retried later."""


class NetworkError(LotLensError):
    """The API did not answer (connection refused, reset or timed out)."""


class UnexpectedResponseError(LotLensError):
    """An answer whose body is not what the contract promises."""


class WaitTimeoutError(LotLensError, TimeoutError):
    """`wait_for_job` gave up before the job reached a terminal status (or before a poll answered:
    then the last poll's error is its `__cause__` and `details["last_error"]` its code)."""


_BY_STATUS: dict[int, type[LotLensError]] = {
    400: ValidationError, 401: AuthenticationError, 403: AuthenticationError, 404: NotFoundError,
    409: ValidationError, 413: ValidationError, 422: ValidationError, 429: RateLimitedError,
}
_ENVELOPE = frozenset({"error", "message", "code", "details"})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # RFC 9110 delay-seconds: digits only ("-3", "inf" are not)
        return float(text)
    return _seconds_until(text, time.time() if now is None else now)


def _seconds_until(http_date: str, now: float) -> float | None:
    """Seconds from `now` to an HTTP date, or None when it is not one."""
    try:
        moment = email.utils.parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # asctime, the third HTTP-date form, has no zone: it is GMT
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)


def error_from_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> LotLensError:
    """The exception for an error answer: its class from the status, the rest from the body."""
    document: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    code = str(document.get("code") or f"HTTP_{status}")
    message = str(document.get("message") or document.get("error") or f"HTTP {status}")
    raw_details = document.get("details")
    # Bodies without `details` (e.g. cancel's 400 `{error, status, message}`) keep their other fields.
    details = dict(raw_details) if isinstance(raw_details, Mapping) else {
        key: value for key, value in document.items() if key not in _ENVELOPE}
    if status == 429:
        retry_after = parse_retry_after((headers or {}).get("retry-after"))
        if retry_after is None and isinstance(details.get("retry_after"), int | float):
            retry_after = float(details["retry_after"])
        return RateLimitedError(status, code, message, details, retry_after=retry_after)
    cls = ServerError if status >= 500 else _BY_STATUS.get(status, LotLensError)
    return cls(status, code, message, details)


def outcome_unknown(error: LotLensError) -> bool:
    """Whether the request may have been carried out although it failed: no answer, a 5xx (a
    proxy's 502/504 hides the gateway's answer), an answer that could not be read, or an earlier
    attempt with the same Idempotency-Key still in progress."""
    if error.code == KEY_IN_PROGRESS:
        return True
    return isinstance(error, NetworkError | ServerError | UnexpectedResponseError)
