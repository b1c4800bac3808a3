"""What can go wrong when talking to the model, independent of the SDK that raised it."""

from __future__ import annotations

import re


class ModelError(Exception):
    """Base of every model-facing failure."""


class ModelOutputError(ModelError):
    """The model answered, but not with something usable (incomplete, empty, not the asked JSON)."""


class ModelIncompleteError(ModelOutputError):
    """The model stopped before it finished (`status: incomplete`), e.g. out of output tokens."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ModelWrongLanguageError(ModelOutputError):
    """A translation came back untranslated or in another script for some languages: another
    answer may be right, so those are asked again within the attempts. `right`: the answer's
    texts for the other languages, which were in their language and are kept (paid for once)."""

    def __init__(self, problems: dict[str, str], right: dict[str, str] | None = None) -> None:
        listed = "; ".join(f"{language}: {problem}" for language, problem in problems.items())
        super().__init__(f"the translation is not in the language asked for ({listed})")
        self.languages = tuple(problems)
        self.right = right or {}


class ModelUnavailableError(ModelError):
    """The API could not answer now (5xx, connection trouble, exhausted quota); worth retrying later."""


class ModelUnreachableError(ModelUnavailableError):
    """No answer came: the connection was refused, reset or never made (DNS, a proxy, egress)."""


class ModelTimeoutError(ModelUnavailableError):
    """The API did not answer within the client's timeout."""


class ModelConnectTimeoutError(ModelUnreachableError, ModelTimeoutError):
    """No connection was made within the client's timeout (httpx's `ConnectTimeout`, "timed out
    while connecting to the host"): like a refused one, no byte of the request left, so direct
    mode sends it again without using an attempt; a timeout all the same to a caller waiting."""


class ModelQuotaExceededError(ModelUnavailableError):
    """The API refused for want of credit (429 `insufficient_quota`): paying, not waiting a
    minute, ends it, and every call of the project is refused alike until then."""


class ModelRateLimitedError(ModelUnavailableError):
    """The API kept answering 429 after the bounded retries."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelRequestError(ModelError):
    """The API rejected the request itself (4xx other than 429); sending it again will not help."""

    def __init__(self, message: str, status_code: int, code: str | None = None,
                 error_type: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.error_type = error_type  # OpenAI's `type`, e.g. `invalid_request_error`
        self.param = param  # OpenAI's `param`: the part of the request refused, when it names one


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


# What a client reads about a failed model call: a fixed sentence per kind, and OpenAI's error
# type and code, which say what went wrong without its words. Its message names the configured
# model, the organization, its limits and billing: that goes to the operators' log only.
_CLIENT_SENTENCES = {
    "authentication": "the model API refused the service's credentials",
    "rate_limited": "the model API's rate limit was reached",
    "timeout": "the model API did not answer in time",
    "unavailable": "the model API was unavailable",
    "bad_request": "the model refused the request",
    "output": "the model's answer could not be used",
    "other": "the model request failed",
}
# A code is an identifier; anything else from the answer is not repeated.
_LABEL = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def client_reason(kind: str, *labels: str | None) -> str:
    """The sentence for `kind` (an `error_kind` value), with OpenAI's error type and code in brackets."""
    shown = ": ".join(dict.fromkeys(label for label in labels if label and _LABEL.fullmatch(label)))
    sentence = _CLIENT_SENTENCES.get(kind, _CLIENT_SENTENCES["other"])
    return f"{sentence} ({shown})" if shown else sentence


def status_kind(status: int | None, code: str | None) -> str:
    """`error_kind` of a failed request known by its HTTP status and error code alone (a batch line)."""
    if status in _AUTH_STATUSES:
        return "authentication"
    if status == 429 or code == "rate_limit_exceeded":
        return "rate_limited"
    if status == 408 or code == "timeout":
        return "timeout"
    # `not_sent` without a status: direct mode's own line for a connection the server refused
    # (`stage/core/outcomes.NOT_SENT`); with one, it is the server's code like any other.
    if (status is not None and status >= 500) or code in ("server_error", "internal_error") or (
            status is None and code == "not_sent"):
        return "unavailable"
    if status is not None and 400 <= status < 500:
        return "bad_request"
    return "other"
