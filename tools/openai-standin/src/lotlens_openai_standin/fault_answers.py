"""The answers of injected faults, each in the shape OpenAI sends for it."""

from __future__ import annotations

import asyncio
import math

from lotlens_openai_standin.api_errors import SERVER_ERROR_MESSAGE, ApiError, not_found
from lotlens_openai_standin.faults import ApiFault, Faults

QUOTA_MESSAGE = ("You exceeded your current quota, please check your plan and billing details. For more "
                 "information on this error, read the docs: "
                 "https://platform.openai.com/docs/guides/error-codes/api-errors.")
KEY_MESSAGE = ("Incorrect API key provided: sk-stand***********key. You can find your API key at "
               "https://platform.openai.com/account/api-keys.")


def rate_limited(retry_after_s: float) -> ApiError:
    """A per-minute limit hit: 429 `rate_limit_exceeded` with `retry-after` (whole seconds) and `-ms`."""
    message = (f"Rate limit reached in organization org-standin on requests per min (RPM): Limit 3, Used 3, "
               f"Requested 1. Please try again in {retry_after_s:g}s. Visit "
               "https://platform.openai.com/account/rate-limits to learn more.")
    return ApiError(429, message, type_="requests", code="rate_limit_exceeded", headers={
        "retry-after": str(math.ceil(retry_after_s)), "retry-after-ms": str(int(retry_after_s * 1000)),
        "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": f"{retry_after_s:g}s"})


async def fault_error(fault: ApiFault, faults: Faults, path: str = "") -> ApiError:
    """The error a fault answers with (a timeout first holds the request for `fault.seconds`)."""
    if fault.kind == "not_found":
        # As OpenAI answers for a file it does not have (or does not show yet).
        return not_found(f"No such File object: {path.removeprefix('/v1/files/').split('/')[0]}", param="id")
    if fault.kind == "rate_limit":
        return rate_limited(faults.next_retry_after())
    if fault.kind == "insufficient_quota":
        # No Retry-After: waiting does not help, paying does.
        return ApiError(429, QUOTA_MESSAGE, type_="insufficient_quota", code="insufficient_quota")
    if fault.kind == "invalid_api_key":
        return ApiError(401, KEY_MESSAGE, code="invalid_api_key")
    if fault.kind == "overloaded":
        return ApiError(503, "The server is overloaded or not ready yet.", type_="server_error")
    if fault.kind == "timeout":
        await asyncio.sleep(fault.seconds)
        return ApiError(504, "Gateway timeout.", type_="server_error", code="gateway_timeout")
    return ApiError(500, SERVER_ERROR_MESSAGE, type_="server_error")
