"""The stage's pause while OpenAI refuses batches for want of credit (429 `insufficient_quota`),
and what any pause lets the stage build.

With the billing out for hours, every watch round rebuilt each `building` shard (images checked,
the JSONL written, up to 198 MB uploaded, the create refused), left each uploaded file at OpenAI
for its 30 days (customer data: signed image URLs), logged a traceback, and claimed new jobs into
shards that stayed `building`. Now the refused create's file is deleted and the stage pauses:
logged once when it begins and once when it ends, with one try after a wait that grows from a
minute to `QUOTA_MAX_WAIT_S`. No call short of a create shows that OpenAI takes batches again (a
batch of one request to test it would be a real one, run and billed, under our metadata), so the
try is a shard built as usual, the refused one first (recovery); a successful create ends the
pause. The pause lives in the process's memory: a restart tries once at its first round.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from lotlens_common.model.errors import ModelError, ModelQuotaExceededError
from lotlens_common.stage.ports import KEY_REFUSED, QUOTA_EXHAUSTED, Stage

log = logging.getLogger(__name__)

QUOTA_FIRST_WAIT_S = 60.0
# At most four uploads an hour (each deleted once refused) while the billing stays out.
QUOTA_MAX_WAIT_S = 900.0


def pause_for_quota(stage: Stage[Any], exc: ModelError) -> bool:
    """Pause the stage if `exc` refused a call for the quota, until its next try (logged when the
    pause begins); whether it did."""
    if not isinstance(exc, ModelQuotaExceededError):
        return False
    stage.quota_wait_s = min(QUOTA_MAX_WAIT_S, stage.quota_wait_s * 2 or QUOTA_FIRST_WAIT_S)
    stage.quota_retry_at = time.monotonic() + stage.quota_wait_s
    if QUOTA_EXHAUSTED not in stage.unreadable:
        log.error("OpenAI refused a batch for the quota (%s): the %s stage submits nothing until a "
                  "batch is created again; it tries one in %.0f s, then less and less often", exc,
                  stage.spec.name, stage.quota_wait_s)
    stage.unreadable[QUOTA_EXHAUSTED] = str(exc)
    return True


def quota_accepted(stage: Stage[Any]) -> None:
    """A batch was created: end a quota pause (logged once)."""
    stage.quota_wait_s = 0.0
    if stage.unreadable.pop(QUOTA_EXHAUSTED, None) is not None:
        log.warning("OpenAI creates batches again: the %s stage submits again", stage.spec.name)


def may_build(stage: Stage[Any], recovering: bool = False) -> bool:
    """Whether the stage may build a batch now (write, upload, create).

    Never while a batch it made cannot be read: one created under the current key, listed, took
    the unreadable one for lost. While the key is refused, only recovery builds (its shard is the
    try that proves the key again). While the quota is out, one build when its try is due.
    """
    pauses = stage.unreadable.keys() - {KEY_REFUSED, QUOTA_EXHAUSTED}
    if pauses:
        return False
    if KEY_REFUSED in stage.unreadable and not recovering:
        return False
    return QUOTA_EXHAUSTED not in stage.unreadable or time.monotonic() >= stage.quota_retry_at
