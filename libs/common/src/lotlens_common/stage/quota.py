"""The stage's pause while OpenAI refuses batches for want of credit (429 `insufficient_quota`),
and what any pause lets the stage build.

With the billing out for hours, every watch round rebuilt each `building` shard (images checked,
the JSONL written, up to 198 MB uploaded, the create refused), left each uploaded file at OpenAI
for its 30 days (customer data: signed image URLs), logged a traceback, and claimed new jobs into
shards that stayed `building`. Now the refused create's file is deleted and the stage pauses:
logged once when it begins and once when it ends, with one try after a wait that grows from a
minute to `QUOTA_MAX_WAIT_S`. No call short of a create shows that OpenAI takes batches again (a
batch of one request to test it would be a real one, run and billed, under our metadata), so the
try is a shard built as usual: recovery's, of the oldest building shard (the refused one, or older); a
successful create ends the pause.

The pause is kept on the refused shard's row (`postgres_quota.py`), as an unreadable batch's is:
held in the process's memory, it paused only the replica that was refused, and another one (or
the same one restarted) uploaded and created again at once, N replicas N files a round. Every
instance reads it before each claim and again right before each upload (one that has not seen
it yet stops there), and each due try is taken on the rows by one instance of all, before its
recovery lists the shard's batches, and by none while another pause (an unreadable batch) keeps
recovery from building. Only a create asked under it uses the try: recovery that asked none (the
shard's batch found and adopted, a listing or an upload that failed, a stop) gives it back, due
again at once on the rows it moved; taken for good, it pushed the next try out by the doubled
wait. A create another instance began before the pause and was refused meanwhile keeps the wait
it put on its row (the hand-back set every row's next try to now, and a try came early).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lotlens_common.model.errors import ModelError, ModelQuotaExceededError
from lotlens_common.stage.ports import KEY_REFUSED, QUOTA_EXHAUSTED, QuotaPause, Stage

log = logging.getLogger(__name__)

QUOTA_FIRST_WAIT_S = 60.0
# At most four uploads an hour (each deleted once refused) while the billing stays out.
QUOTA_MAX_WAIT_S = 900.0


class QuotaPaused(Exception):
    """The stage's quota pause holds (another instance took its try): nothing is uploaded."""


def next_wait_s(paused_s: float) -> float:
    """The wait after a try of a pause that has lasted `paused_s`: a minute more than that, at most
    `QUOTA_MAX_WAIT_S`. Tries on time make it 1, 2, 4, 8, 15 minutes (each wait doubles the one
    before) with nothing but the pause's beginning on record, whichever instance tries."""
    return min(QUOTA_MAX_WAIT_S, QUOTA_FIRST_WAIT_S + max(paused_s, 0.0))


def pause_for_quota(stage: Stage[Any], exc: ModelError, shard_id: str) -> bool:
    """Pause the stage, for every instance, if `exc` refused the shard's batch for the quota,
    until its next try (logged when the pause begins); whether it did."""
    if not isinstance(exc, ModelQuotaExceededError):
        return False
    pause = stage.store.quota_pause()
    wait_s = next_wait_s(pause.paused_s if pause is not None else 0.0)
    stage.store.note_quota_refused(shard_id, str(exc), wait_s)
    if QUOTA_EXHAUSTED not in stage.unreadable:
        log.error("OpenAI refused a batch for the quota (%s): the %s stage submits nothing until a "
                  "batch is created again; it tries one in %.0f s, then less and less often", exc,
                  stage.spec.name, wait_s)
    stage.unreadable[QUOTA_EXHAUSTED] = str(exc)
    return True


def quota_accepted(stage: Stage[Any]) -> None:
    """A batch was created: end the quota pause, for every instance (logged once)."""
    stage.store.end_quota_pause()
    if stage.unreadable.pop(QUOTA_EXHAUSTED, None) is not None:
        log.warning("OpenAI creates batches again: the %s stage submits again", stage.spec.name)


def recorded_pause(stage: Stage[Any]) -> QuotaPause | None:
    """The quota pause as the rows hold it now, held in this process's view too (logged when this
    process first holds it, and when it ended: another instance's batch was created)."""
    pause = stage.store.quota_pause()
    if pause is None:
        if stage.unreadable.pop(QUOTA_EXHAUSTED, None) is not None:
            log.warning("the quota pause of the %s stage ended (a batch was created): it submits again",
                        stage.spec.name)
        return None
    if QUOTA_EXHAUSTED not in stage.unreadable:
        log.error("OpenAI refused a batch of the %s stage for the quota (%s), %.0f s ago: it submits "
                  "nothing until a batch is created again; the next try is due in %.0f s",
                  stage.spec.name, pause.reason, pause.paused_s, max(pause.retry_in_s, 0.0))
    stage.unreadable[QUOTA_EXHAUSTED] = pause.reason
    return pause


@dataclass
class QuotaTry:
    """Recovery's part in the quota pause, for one building shard: the next try's time it put on
    the rows if it took the pause's due try, and whether a create was asked under it (what uses
    the try up)."""

    moved_to: datetime | None = None
    create_asked: bool = False


@contextmanager
def quota_try(stage: Stage[Any], wanted: bool) -> Iterator[QuotaTry]:
    """Around recovery of one building shard (the listing of its batches, its build): the quota
    pause's due try, taken by this process if `wanted` and a pause is known here (none otherwise),
    and given back unless a create was asked under it (on the rows it moved: a refusal another
    instance recorded meanwhile keeps its wait). `QuotaPaused` while the pause holds,
    another instance took the try, or another pause (an unreadable batch) keeps recovery from
    building: no listing either, each shard listed up to 50 pages a round."""
    the_try = QuotaTry(_take_due_try(stage) if wanted else None)
    try:
        yield the_try
    finally:
        if the_try.moved_to is not None and not the_try.create_asked:
            stage.store.give_back_quota_try(the_try.moved_to)
            log.info("the %s stage's quota try asked no create: the next try is due at once, unless "
                     "a refusal recorded since waits longer", stage.spec.name)


def _take_due_try(stage: Stage[Any]) -> datetime | None:
    if QUOTA_EXHAUSTED not in stage.unreadable:
        return None
    pause = recorded_pause(stage)
    if pause is None:
        return None
    # Not taken for a shard another pause keeps from being built: no create could use it, and
    # each building shard in turn took it, listed the stage's batches and gave it back, every round.
    if pause.retry_in_s <= 0 and may_build(stage, recovering=True):
        moved_to = stage.store.take_quota_try(next_wait_s(pause.paused_s))
        if moved_to is not None:
            return moved_to
    raise QuotaPaused(f"the {stage.spec.name} stage is paused for the quota: {pause.reason}")


def check_upload(stage: Stage[Any], the_try: QuotaTry | None) -> None:
    """Right before an upload: `QuotaPaused` if a quota pause is on record, unless this build is
    its try. Asked here, not only before the claim: another instance's create refused while this
    one prepared a shard (for minutes, with slow image hosts) pauses this upload too."""
    if (the_try is None or the_try.moved_to is None) and recorded_pause(stage) is not None:
        raise QuotaPaused(f"the {stage.spec.name} stage is paused for the quota")


def queue_held(stage: Stage[Any]) -> bool:
    """Whether the stage's queue hold holds new batches back now, read from the store."""
    return stage.store.queue_held().left_s > 0


def may_build(stage: Stage[Any], recovering: bool = False) -> bool:
    """Whether the stage may build a batch now (write, upload, create).

    Never while a batch it made cannot be read: one created under the current key, listed, took
    the unreadable one for lost; nor while one it made is not on record (`Stage.held_shard`).
    While the key is refused, only recovery builds (its shard is the try that proves the key again).
    While the quota is out, only recovery, with the try it took (`quota_try`); the pause is read
    from the rows: another instance's batch may have ended it.
    Nor, recovery included, while OpenAI's queue for the model is full (`core/queue_hold.py`), as
    any instance learnt: a restarted replica's recovery rebuilt its building shards into batches
    refused the same way.
    """
    if queue_held(stage) or stage.held_shard is not None:
        return False
    if stage.unreadable.keys() - {KEY_REFUSED, QUOTA_EXHAUSTED}:
        return False
    if KEY_REFUSED in stage.unreadable and not recovering:
        return False
    return QUOTA_EXHAUSTED not in stage.unreadable or recovering or recorded_pause(stage) is None
