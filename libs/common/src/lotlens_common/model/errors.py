"""What can go wrong when talking to the model, independent of the SDK that raised it."""

from __future__ import annotations


class ModelError(Exception):
    """Base of every model-facing failure."""


class ModelOutputError(ModelError):
    """The model answered, but not with something usable (incomplete, empty, not the asked JSON)."""


class ModelIncompleteError(ModelOutputError):
    """The model stopped before it finished (`status: incomplete`), e.g. out of output tokens."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ModelUnavailableError(ModelError):
    """The API could not answer now (5xx, connection trouble, exhausted quota); worth retrying later."""


class ModelTimeoutError(ModelUnavailableError):
    """The API did not answer within the client's timeout."""


class ModelRateLimitedError(ModelUnavailableError):
    """The API kept answering 429 after the bounded retries."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelRequestError(ModelError):
    """The API rejected the request itself (4xx other than 429); sending it again will not help."""

    def __init__(self, message: str, status_code: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


# HTTP statuses that mean the API key or its permissions are wrong: no retry will help.
_AUTH_STATUSES = frozenset({401, 403})
# Every value `error_kind` gives, so counters can export each at 0 from the start.
ERROR_KINDS = ("authentication", "rate_limited", "timeout", "unavailable", "bad_request", "output", "other")


def error_kind(exc: BaseException) -> str:
    """A small, stable label for a model API failure (metrics and alerts group by it)."""
    status = getattr(exc, "status_code", None)
    if status in _AUTH_STATUSES:
        return "authentication"
    if isinstance(exc, ModelRateLimitedError) or status == 429:
        return "rate_limited"
    if isinstance(exc, ModelTimeoutError) or "Timeout" in type(exc).__name__:
        return "timeout"
    if isinstance(exc, ModelUnavailableError) or "Connection" in type(exc).__name__ or (
            isinstance(status, int) and status >= 500):
        return "unavailable"
    if isinstance(exc, ModelRequestError) or isinstance(status, int):
        return "bad_request"
    if isinstance(exc, ModelOutputError):
        return "output"
    return "other"
