"""Reading and parsing a request body under the gateway's own rules (413 and 400, never a 500)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from lotlens_gateway.errors import ApiError


def too_large(max_bytes: int, declared: int | None = None) -> ApiError:
    """413 for a body over the limit."""
    details: dict[str, Any] = {"max_bytes": max_bytes}
    if declared is not None:
        details["content_length"] = declared
    return ApiError(413, "PAYLOAD_TOO_LARGE", f"Request body exceeds the limit of {max_bytes} bytes",
                    details=details)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refused as soon as it is known to exceed `max_bytes` (header or counted)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes, int(declared))
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > max_bytes:
            raise too_large(max_bytes)
    return bytes(received)


def parse_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 `INVALID_JSON` for anything else (blocking for big bodies)."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "INVALID_JSON", "Request body must be valid JSON",
                       details={"problem": str(exc)[:300]}) from exc
    if not isinstance(document, dict):
        raise ApiError(400, "INVALID_JSON", "Request body must be a JSON object",
                       details={"problem": f"got a JSON {type(document).__name__}"})
    # A NUL can only arrive escaped; PostgreSQL text cannot store one, so such a body is refused
    # up front (the byte search is cheap; the exact walk runs only when it hits).
    if b"\\u0000" in raw and _holds_nul(document):
        raise ApiError(422, "VALIDATION_ERROR", "Strings must not contain the NUL character (\\u0000)")
    return document


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    return False
