"""Reading and parsing a request body under the gateway's own rules (413 and 400, never a 500)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from starlette.requests import ClientDisconnect

from lotlens_gateway.errors import ApiError, client_closed


def too_large(max_bytes: int, declared: int | None = None) -> ApiError:
    """413 for a body over the limit."""
    details: dict[str, Any] = {"max_bytes": max_bytes}
    if declared is not None:
        details["content_length"] = declared
    return ApiError(413, "PAYLOAD_TOO_LARGE", f"Request body exceeds the limit of {max_bytes} bytes",
                    details=details)


@dataclass(frozen=True)
class BodyTimeouts:
    """How long a body's bytes may stop arriving (`gap_s`), how long the whole body may take, and
    (for a job body, 0: none) the average rate it must keep once its first `min_rate_after_s` are over."""

    gap_s: float = 15.0
    total_s: float = 120.0
    min_bytes_per_s: float = 0.0
    min_rate_after_s: float = 0.0

    def falls_behind(self, received: int) -> float | None:
        """Seconds after the body's start at which `received` bytes are under the minimum rate."""
        if self.min_bytes_per_s <= 0:
            return None
        return max(self.min_rate_after_s, received / self.min_bytes_per_s)


def too_slow(timeouts: BodyTimeouts, cause: str) -> ApiError:
    """408 for a body that stopped arriving, took too long, or fell under its minimum rate
    (`cause`: "stalled", "total", "rate"); the connection is closed after it."""
    messages = {
        "stalled": f"The request body stopped arriving for {timeouts.gap_s} s",
        "total": f"The request body did not arrive within {timeouts.total_s} s",
        "rate": (f"The request body arrived at under {timeouts.min_bytes_per_s:g} bytes/s on average "
                 f"after its first {timeouts.min_rate_after_s:g} s, the least a job body must keep"),
    }
    details: dict[str, Any] = {"body_gap_timeout_s": timeouts.gap_s, "body_timeout_s": timeouts.total_s}
    if timeouts.min_bytes_per_s > 0:
        details |= {"min_bytes_per_s": timeouts.min_bytes_per_s,
                    "min_rate_after_s": timeouts.min_rate_after_s}
    return ApiError(408, "REQUEST_TIMEOUT", messages[cause], headers={"Connection": "close"}, details=details)


def declared_length(request: Request) -> int | None:
    """The body's size as its `Content-Length` header says (None: not said, e.g. chunked)."""
    declared = request.headers.get("content-length")
    return int(declared) if declared is not None and declared.isdigit() else None


async def read_body(request: Request, max_bytes: int, timeouts: BodyTimeouts) -> bytes:
    """The raw body, refused as soon as it is known to exceed `max_bytes` (header or counted) or
    to be too slow (every body the gateway reads comes through here), and refused when it is
    compressed (read whole first, so the client reads the answer, not a reset connection)."""
    received = bytearray()
    async for chunk in _chunks(request, max_bytes, timeouts):
        received += chunk
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Bodies are signed and limited as sent: decompressing would leave the signature's bytes
        # and the size limits in doubt, and a small gzip body can unpack to gigabytes.
        raise ApiError(400, "UNSUPPORTED_CONTENT_ENCODING",
                       f"Content-Encoding {encoding!r} is not supported: send the JSON uncompressed",
                       details={"content_encoding": encoding, "supported": ["identity"]})
    return bytes(received)


async def drain_body(request: Request, max_bytes: int, timeouts: BodyTimeouts,
                     feed: Callable[[bytes], object] | None = None) -> int:
    """Read the body under the same rules and drop it as it arrives, each chunk given to `feed`
    first (a hash's `update`: the body known without being held); how many bytes it had.

    For a request answered without its body: answering while the client still uploads would
    reset its connection before it reads the answer. A client waiting for `100 Continue` has sent
    nothing yet: reading would invite the whole upload (curl asks before a big body) only to refuse
    it, and RFC 9110 10.1.1 lets the final answer come at once.
    """
    if request.headers.get("expect", "").lower() == "100-continue":
        return 0
    dropped = 0
    async for chunk in _chunks(request, max_bytes, timeouts):
        if feed is not None:
            feed(chunk)
        dropped += len(chunk)
    return dropped


async def _chunks(request: Request, max_bytes: int, timeouts: BodyTimeouts) -> AsyncIterator[bytes]:
    declared = declared_length(request)
    if declared is not None and declared > max_bytes:
        raise too_large(max_bytes, declared)
    loop = asyncio.get_running_loop()
    start = loop.time()
    size = 0
    chunks = aiter(request.stream())
    while True:
        now = loop.time()
        # The first of the limits to run out, and which one it is.
        limits = [(timeouts.gap_s, "stalled"), (start + timeouts.total_s - now, "total")]
        behind = timeouts.falls_behind(size)
        if behind is not None:
            limits.append((start + behind - now, "rate"))
        wait, cause = min(limits, key=lambda limit: limit[0])
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                chunk = await anext(chunks, None)
        except TimeoutError:
            raise too_slow(timeouts, cause) from None
        except ClientDisconnect:
            # A dropped upload is the client's doing: it was logged and counted as a 500.
            raise client_closed("its body arrived") from None
        if chunk is None:
            return
        size += len(chunk)
        if size > max_bytes:
            raise too_large(max_bytes)
        yield chunk


_UTF8_BOM = b"\xef\xbb\xbf"


def without_byte_order_mark(raw: bytes) -> bytes:
    """The body without a leading UTF-8 byte order mark (the JSON after it)."""
    # RFC 8259 §8.1: a sender must not add one, a parser may ignore it. Windows tools save UTF-8
    # with one (PowerShell 5's `Set-Content -Encoding UTF8`) and `curl -d @job.json` sends it: a
    # body plainly starting with `{` was 400 INVALID_JSON "expected '{' at character 0".
    return raw[len(_UTF8_BOM):] if raw.startswith(_UTF8_BOM) else raw


def parse_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 `INVALID_JSON` for anything else (blocking for big bodies)."""
    try:
        document = orjson.loads(without_byte_order_mark(raw))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "INVALID_JSON", "Request body must be valid JSON",
                       details={"problem": str(exc)[:300]}) from exc
    if not isinstance(document, dict):
        raise ApiError(400, "INVALID_JSON", "Request body must be a JSON object",
                       details={"problem": f"got a JSON {type(document).__name__}"})
    refuse_nul(raw, document)
    return document


def refuse_nul(raw: bytes, document: Any) -> None:
    """422 when a string of the document holds a NUL (PostgreSQL text cannot store one).

    A NUL can only arrive escaped: the byte search is cheap, and the exact walk runs only when it
    hits. The walk keeps its own stack: a deeply nested body cannot make it recurse.
    """
    if b"\\u0000" not in raw:
        return
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str) and "\x00" in value:
            raise ApiError(422, "VALIDATION_ERROR", "Strings must not contain the NUL character (\\u0000)")
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
