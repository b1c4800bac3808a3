"""What becomes of a lot once its batch has answered (or failed to). No I/O.

| what happened                                   | kind      | the lot                        |
|-------------------------------------------------|-----------|--------------------------------|
| 200 with a usable body                          | -         | done                           |
| 200 but unusable (filtered, not the asked JSON) | permanent | failed with the reason         |
| 200 but cut off at its output budget, or a      | transient | sent again changed (more room; |
|   language untranslated or in another script    |           |   only the wrong languages),   |
|   (the stage's `retry_unusable` decides)        |           |   until `max_attempts`         |
| 4xx line (invalid request, content policy,      | permanent | failed at once with the reason |
|   image OpenAI could not fetch)                 |           |   (OpenAI's type and code only)|
| 408/409/429/5xx line, batch expired/cancelled/  | transient | waiting again, until           |
|   failed, no line at all                        |           |   `max_attempts`, then failed  |
| batch refused whole before it ran (enqueued-    | unsent    | waiting again, the send not    |
|   token limit, file too large); a direct-mode   |           |   counted as an attempt        |
|   line the server refused (`not_sent` with no   |           |                                |
|   HTTP answer: the request never left the       |           |                                |
|   machine)                                      |           |                                |
| any, when the job was cancelled                 | -         | cancelled                      |
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

# Per-line error codes that say "try again" whatever the status (OpenAI batch error file).
TRANSIENT_CODES = frozenset({"batch_expired", "batch_cancelled", "server_error", "rate_limit_exceeded",
                             "timeout", "internal_error"})
# 4xx statuses that are about timing, not about the request.
TRANSIENT_4XX = frozenset({408, 409, 429})
# Direct mode's code for a line whose request never reached the model server (connection refused:
# it was down, restarting), on a line with no HTTP answer at all (no status), which only the direct
# adapter writes. One it took and then dropped, failed or timed out is not one: that request may be
# what brings the server down, and must use up its attempts like any. Nor is an answer carrying the
# code (a server's 4xx body, a Batch API line with a status): it was sent again, uncounted, for ever.
NOT_SENT = "not_sent"


class Kind(Enum):
    """Whether sending the same request again can succeed."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    UNSENT = "unsent"  # the request was never run (OpenAI refused the batch, the server the line)


def line_kind(status: int | None, code: str | None) -> Kind:
    """The kind of a failed batch line, from its HTTP status and error code."""
    if code == NOT_SENT and status is None:
        return Kind.UNSENT
    if code in TRANSIENT_CODES:
        return Kind.TRANSIENT
    if status is not None and 400 <= status < 500 and status not in TRANSIENT_4XX:
        return Kind.PERMANENT
    return Kind.TRANSIENT


@dataclass(frozen=True)
class Outcome:
    """A lot's fate: settled done/failed/cancelled, or back to waiting (`retry`)."""

    verdict: Literal["done", "failed", "retry", "cancelled"]
    reason: str | None = None
    counted: bool = True  # a retry: whether the send it comes back from was an attempt


DONE = Outcome("done")


def after_error(kind: Kind, reason: str, attempts: int, max_attempts: int,
                job_cancelled: bool) -> Outcome:
    """A lot that got no usable answer: fail it, send it again, or drop it with its job."""
    if job_cancelled:
        return Outcome("cancelled", reason)
    if kind is Kind.PERMANENT:
        return Outcome("failed", reason)
    if kind is Kind.UNSENT:
        return Outcome("retry", reason, counted=False)
    if attempts >= max_attempts:
        return Outcome("failed", f"{reason} (gave up after {attempts} attempts)")
    return Outcome("retry", reason)
