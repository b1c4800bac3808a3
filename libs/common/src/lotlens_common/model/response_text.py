"""Reading the assistant's text out of a Responses API body (direct call or batch output line)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lotlens_common.model.errors import (
    ModelIncompleteError,
    ModelOutputError,
    ModelUnavailableError,
    client_reason,
)
from lotlens_common.model.html_text import printable
from lotlens_common.redaction import redacted

log = logging.getLogger(__name__)
# ResponseErrorCode values (openapi.yaml) that say "not now": the same request may succeed later.
PASSING_ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded", "vector_store_timeout"})


def response_error(body: Mapping[str, Any]) -> tuple[str | None, str] | None:
    """A failed Response's error (`ResponseError`: a `ResponseErrorCode` and OpenAI's message),
    which a batch line answered 200 can hold; None when it has none."""
    error = body.get("error")
    if not error:
        return None
    if not isinstance(error, Mapping):
        return None, str(error)
    code = error.get("code")
    return (str(code) if code else None), str(error.get("message") or error)


def response_failure(code: str | None) -> ModelUnavailableError | ModelOutputError:
    """What a Response failed with `code` raises: `ModelUnavailableError` for a code that says
    "not now", else `ModelOutputError`. Its text is the lot's reason, which its client reads: the
    code, not OpenAI's message."""
    if code in PASSING_ERROR_CODES:
        return ModelUnavailableError(client_reason("unavailable", code))
    return ModelOutputError(client_reason("bad_request", code))


def response_output_text(body: Mapping[str, Any]) -> str:
    """The joined `output_text` parts of the assistant's final answer; skips reasoning items and
    messages marked as commentary (`phase`)."""
    status = body.get("status")
    if (error := response_error(body)) is not None:
        code, message = error
        # OpenAI's message is for the log, once per synchronous lot. A batch's failed Responses
        # never come here: collect logs a few of them and a summary (one line a lot was 50,000).
        log.warning("the model's response failed: %s: %s", code, redacted(message))
        raise response_failure(code)
    if status == "incomplete":
        reason = (body.get("incomplete_details") or {}).get("reason", "unknown")
        raise ModelIncompleteError(f"the response is incomplete ({reason})", str(reason))
    if status not in (None, "completed"):
        raise ModelOutputError(f"the response has status {status!r}")
    texts: list[str] = []
    refusals: list[str] = []
    for item in body.get("output") or []:
        if (not isinstance(item, dict) or item.get("type") != "message" or item.get("role") != "assistant"
                or item.get("phase") == "commentary"):
            continue
        for part in item.get("content") or []:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "output_text":
                texts.append(str(part.get("text", "")))
            elif part.get("type") == "refusal":
                refusals.append(printable(str(part.get("refusal", ""))))
    if refusals and not any(t.strip() for t in texts):
        raise ModelOutputError(f"the model refused: {' '.join(refusals)}")
    text = "".join(texts)
    if not text.strip():
        raise ModelOutputError("the response has no assistant text")
    return text
