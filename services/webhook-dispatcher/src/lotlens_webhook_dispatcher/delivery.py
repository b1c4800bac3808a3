"""One HTTP attempt at a webhook, judged by the contract.

Success is HTTP 200, 201 or 202 within the timeout, whatever follows the status line: the
receiver has the webhook once it says so. Anything else fails the attempt: another
code, a redirect (never followed: the customer registered this URL, and a redirect could point
anywhere), a timeout, a refused or reset connection, an address the SSRF guard refuses.
HTTP 410 Gone means the endpoint is retired: no more attempts. `Retry-After` is passed on.
An attempt's error text goes into its span, its records and the log: a redirect's target is named
without its userinfo, query or fragment (a signed URL, a `?token=`), and not at all when URL
parsers could read it differently; its body is not kept; every other text is redacted.

httpx2's exception tree, as far as it matters here::

    httpx2.HTTPError
      ├── httpx2.TransportError
      │     ├── httpx2.TimeoutException  (connect, read, write, pool)  -> "timeout"
      │     └── httpx2.NetworkError, ProtocolError, UnsupportedProtocol -> "connection"
      └── ...
    httpx2.InvalidURL, a scheme other than http(s)                      -> "invalid URL" (final)
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx2

from lotlens_common.clock import utc_now
from lotlens_common.redaction import REDACTED, redacted
from lotlens_webhook_dispatcher.guard import attempt_deadline
from lotlens_webhook_dispatcher.schedule import parse_retry_after

SUCCESS_CODES = frozenset({200, 201, 202})
GONE = 410
# At most this much of a response is read (it is only kept for the delivery's history).
_READ_LIMIT_BYTES = 64 * 1024
# Once the status line is in, the body gets at most this long: the status decides the attempt,
# and the body is only drained (so the connection can be kept) or kept for the history. A body
# read until the attempt's deadline let a receiver that answered 200 at once but streamed, or
# never finished, its body hold the attempt and its host's and client's slots for the whole 30 s.
_BODY_WAIT_S = 1.0
# A Location every URL parser reads alike: printable ASCII but `\`, starting with an authority
# (`https://h`, `//h`), a path from the root or a reference whose first segment has no `:`. WHATWG
# parsers (browsers, Node) read `\` as `/`, drop tabs, skip extra slashes and take a scheme other
# than the base's without its `//`: `/\u:p@h/x`, `///u:p@h/x` or `https:/u:p@h/x`, paths to
# httpx2, named a host and its credentials there. Any other Location is not named at all.
_PRINTABLE = re.compile(r"[!-\[\]-~]*")
_PLAIN_START = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?//[^/]|/(?!/)|(?![^/?#]*:)(?!/)")


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt got back."""

    succeeded: bool
    latency_ms: float
    status_code: int | None = None
    error: str | None = None
    response_body: str | None = None
    retry_after_s: float | None = None
    # No later attempt can succeed (410 Gone, a URL we cannot send to): give up now.
    final: bool = False


def post_webhook(transport: httpx2.BaseTransport, url: str, body: bytes, headers: Mapping[str, str],
                 timeout_s: float, body_chars: int = 2000) -> AttemptOutcome:
    """POST one webhook body and judge the answer; never raises for what the endpoint does.

    Straight to the transport: an `httpx2.Client` adds cookies, auth and redirect handling that a
    webhook never uses, a quarter of the CPU an attempt costs.
    """
    started = time.monotonic()
    try:
        parsed = httpx2.URL(url)
    except httpx2.InvalidURL as exc:
        return _failed(started, f"invalid URL: {exc}", final=True)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return _failed(started, "invalid URL: not an http(s) URL with a host", final=True)
    request = httpx2.Request("POST", parsed, content=body, headers=dict(headers),
                            extensions={"timeout": httpx2.Timeout(timeout_s).as_dict()})
    try:
        with attempt_deadline(timeout_s):
            response = transport.handle_request(request)
            latency_ms = (time.monotonic() - started) * 1000
            try:
                with attempt_deadline(_BODY_WAIT_S):
                    text = _read_some(response)
            finally:
                response.close()  # a body not read to its end closes the connection, not kept
    except httpx2.TimeoutException:
        return _failed(started, f"timeout: no complete answer within {timeout_s:g} s")
    except httpx2.HTTPError as exc:
        return _failed(started, f"connection failed: {type(exc).__name__}: {exc}")
    code = response.status_code
    # A redirect's body names its target again (Werkzeug's, Django's), credentials and all: no 3xx
    # body is kept, late or not (a 302 answered past the timeout kept it).
    snippet = text[:body_chars] if text and not 300 <= code < 400 else None
    if latency_ms > timeout_s * 1000:
        return AttemptOutcome(False, latency_ms, code, f"timeout: answered after {latency_ms / 1000:.1f} s",
                              snippet)
    if code in SUCCESS_CODES:
        # An accepted delivery's answer says nothing we need, and it is the customer's own data,
        # kept in the attempts' table and in the record topic for good: it is not recorded.
        return AttemptOutcome(True, latency_ms, code, None, None)
    return AttemptOutcome(False, latency_ms, code, _describe(response, parsed)[:body_chars], snippet,
                          parse_retry_after(response.headers.get("retry-after"), utc_now()),
                          final=code == GONE)


def _read_some(response: httpx2.Response) -> str:
    """The start of the answer, as far as it can be read: a body cut short, undecodable or still
    coming at its deadline is kept as read (it only goes into the history; the status judges)."""
    chunks: list[bytes] = []
    size = 0
    with contextlib.suppress(httpx2.HTTPError):
        for chunk in response.iter_bytes():  # the attempt's deadline bounds the time it takes
            chunks.append(chunk)
            size += len(chunk)
            if size >= _READ_LIMIT_BYTES:
                break
    # A NUL (an answer in UTF-16, say) cannot be stored: the read models refused the attempt.
    return b"".join(chunks).decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _describe(response: httpx2.Response, sent_to: httpx2.URL) -> str:
    code = response.status_code
    if response.is_redirect:
        return f"HTTP {code}: redirect to {_target(sent_to, response.headers.get('location'))} not followed"
    if code == GONE:
        return "HTTP 410 Gone: the endpoint asked for no more deliveries"
    return f"HTTP {code}"


def _target(sent_to: httpx2.URL, location: str | None) -> str:
    """Where a redirect points, resolved against the webhook's URL (a relative `/next?token=…` is
    no http(s) URL `redacted` knows), without its userinfo, query or fragment; `[redacted]` when
    URL parsers may disagree on what it names."""
    if location is None:
        return "?"
    if not (_PRINTABLE.fullmatch(location) and _PLAIN_START.match(location)):
        return REDACTED
    try:
        target = sent_to.join(location)
    except httpx2.InvalidURL:
        return REDACTED
    bare = str(target.copy_with(username=None, password=None, query=None, fragment=None))
    return bare + (f"?{REDACTED}" if target.query or target.fragment else "")


def _failed(started: float, error: str, final: bool = False) -> AttemptOutcome:
    # An HTTP library's error may quote the request it failed on.
    return AttemptOutcome(False, (time.monotonic() - started) * 1000, error=redacted(error), final=final)
