"""Judging one synchronous answer against what was asked: a correct 200, an error the contract
tells the client to retry, or a violation (a wrong 200, or an error a fault does not excuse)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from lotlens_client import LotLensError, LotResult

# The errors the contract tells a client to come back after (API.md "Errors"): rate limited,
# OpenAI unavailable or timed out, the service unavailable; and no answer at all (`status` None:
# the gateway killed or cut off mid-request). A 500 is not one: it is an unhandled failure.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# 409 with this code: an earlier attempt under the same Idempotency-Key is still running.
RETRYABLE_CODES = frozenset({"IDEMPOTENCY_KEY_IN_PROGRESS"})
# The one failure the contract documents for a lot (API.md: "A lot whose images are all
# unreachable ends `failed` with a reason"), in the gateway's words.
UNREACHABLE = re.compile(r"none of the lot's \d+ images could be fetched")


@dataclass(frozen=True)
class SyncRequest:
    """What one synchronous call asked for."""

    lot_id: str
    languages: tuple[str, ...]
    image_urls: tuple[str, ...]


def retryable(error: LotLensError) -> bool:
    """True for an error answer a fault may cause and the client is told to retry."""
    return error.status is None or error.status in RETRYABLE_STATUSES or error.code in RETRYABLE_CODES


def wrong_answer(asked: SyncRequest, answer: LotResult | LotLensError) -> str | None:
    """Why the answer breaks the contract for what was asked; None when it is allowed."""
    if isinstance(answer, LotLensError):
        return None if retryable(answer) else f"sync {asked.lot_id} answered {answer} (not retryable)"
    if answer.lot_id != asked.lot_id:
        return f"sync {asked.lot_id} answered for lot {answer.lot_id}"
    if answer.status == "failed":
        documented = UNREACHABLE.fullmatch(answer.error_message or "") and not answer.descriptions
        return None if documented else (
            f"sync {asked.lot_id} failed with an undocumented reason: {answer.error_message!r}")
    if answer.status != "completed":
        return f"sync {asked.lot_id} answered 200 with status {answer.status}"
    return _missing_languages(asked, answer)


def _missing_languages(asked: SyncRequest, answer: LotResult) -> str | None:
    """A completed lot must carry one non-empty description per language asked, and no other."""
    languages: Sequence[str] = [d.language for d in answer.descriptions]
    empty = [d.language for d in answer.descriptions if not d.damages.strip()]
    if sorted(languages) != sorted(asked.languages) or empty:
        return (f"sync {asked.lot_id} completed with descriptions in {languages} (empty: {empty}), "
                f"asked {list(asked.languages)}")
    if answer.processed_images + len(answer.missing_images) != len(asked.image_urls):
        return (f"sync {asked.lot_id} accounts for {answer.processed_images} processed and "
                f"{len(answer.missing_images)} missing images of {len(asked.image_urls)}")
    return None
