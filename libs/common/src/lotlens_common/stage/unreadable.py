"""A submitted batch the stage cannot read by id (401/403/404): the pause it holds, and the
listing of the stage's batches that tells what became of it.

The pause is kept on the shard's row (`lotlens-admin shards paused` reads it) and taken up from
there by every process before it builds anything: held only in memory, it went with any restart,
crash or new replica, whose first round then created a batch under the current key (another
project's, after a rotation) and, seeing that batch listed, took the unreadable one for lost and
sent its lots again while OpenAI still ran and billed them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry.context import Context

from lotlens_common.model.errors import ModelError
from lotlens_common.stage.core import lifecycle
from lotlens_common.stage.ports import Shard, Stage
from lotlens_common.stage.quota import recorded_pause
from lotlens_common.stage.record import STAGE_KEY
from lotlens_common.stage.traced import openai_call

log = logging.getLogger(__name__)

# Pages of 100 batches read when a batch must be found by its metadata.
LISTING_PAGES = 50


def take_up_recorded_pauses(stage: Stage[Any]) -> None:
    """Hold the pauses recorded on the stage's shards (by an earlier process, or another instance),
    once per process, before its first round builds anything: unreadable batches of submitted
    shards, and the quota pause of building ones (`quota.py`)."""
    if stage.recorded_pauses_taken_up:
        return
    for shard in stage.store.shards("submitted"):
        if shard.unreadable is not None and shard.shard_id not in stage.unreadable:
            stage.unreadable[shard.shard_id] = shard.unreadable
            log.error("batch %s of shard %s could not be read when last looked at (%s): submitting "
                      "nothing until a listing shows what became of it", shard.batch_id, shard.shard_id,
                      shard.unreadable, extra={"job_id": shard.job_id, "batch_id": shard.batch_id})
    recorded_pause(stage)
    stage.recorded_pauses_taken_up = True


class RoundListing:
    """The stage's batches, listed at most once in a watch round and only if a batch could not be
    read: each unreadable shard listed up to 50 pages itself, at every poll."""

    def __init__(self, stage: Stage[Any]) -> None:
        self._stage = stage
        self._read: tuple[list[dict[str, Any]], set[str]] | None = None
        self._failure: ModelError | None = None

    async def batches(self, job_trace: Context | None) -> tuple[list[dict[str, Any]], set[str]]:
        """The listed batches, newest first, and the ids of those some shard has on record."""
        if self._failure is not None:
            raise self._failure
        if self._read is None:
            try:
                with openai_call("batches.list", parent=job_trace):
                    listed = await self._stage.batches.find_batches({STAGE_KEY: self._stage.spec.name},
                                                                    LISTING_PAGES)
            except ModelError as exc:
                self._failure = exc
                raise
            ours = self._stage.store.known_batches([str(batch["id"]) for batch in listed])
            self._read = (listed, ours)
        return self._read


async def look_up(stage: Stage[Any], shard: Shard, read: lifecycle.LookUp, cancelled: bool,
                  job_trace: Context | None, listing: RoundListing) -> (
        lifecycle.Wait | lifecycle.Cancel | lifecycle.Collect | lifecycle.Lost | lifecycle.LookUp):
    """Pause, and find the batch its shard could not read (`read`) in the listing of the stage's
    batches: followed from there if listed, lost if batches of ours created before it are listed
    without it, still paused otherwise."""
    assert shard.batch_id is not None
    if shard.shard_id not in stage.unreadable:
        log.error("batch %s of shard %s cannot be read (%s): submitting nothing until a listing "
                  "shows what became of it", shard.batch_id, shard.shard_id, read.reason,
                  extra={"job_id": shard.job_id, "batch_id": shard.batch_id})
    stage.unreadable[shard.shard_id] = read.reason
    try:
        listed, ours = await listing.batches(job_trace)
    except ModelError as exc:
        log.error("listing batches failed too (%s): still paused", exc)
        _note(stage, shard, f"reading it answered {read.reason}; listing the stage's batches failed too")
        return read
    # An adopted batch is older than its shard: batches of ours created between the two prove
    # nothing about it (taken for proof, its lots went again and were paid for twice).
    earliest = min(shard.created_at, shard.batch_created_at or shard.created_at)
    action = lifecycle.for_listing(listed, shard.batch_id, ours, earliest, cancelled, time.time(),
                                   stage.settings.max_batch_age_s)
    if isinstance(action, lifecycle.LookUp):
        _note(stage, shard, f"reading it answered {read.reason}; {action.reason}")
        return action
    readable(stage, shard)
    log.warning("batch %s of shard %s found by listing: %s", shard.batch_id, shard.shard_id,
                type(action).__name__)
    return action


def readable(stage: Stage[Any], shard: Shard) -> None:
    """The shard's batch was read (or its fate listed): the pause it held ends, in memory and on
    its row (one taken up from the row lasted, after a read succeeded, until the batch finished),
    with any release not carried out yet (`postgres_release.note_unreadable`)."""
    stage.unreadable.pop(shard.shard_id, None)
    if shard.unreadable is not None:
        stage.store.note_unreadable(shard.shard_id, None)


def _note(stage: Stage[Any], shard: Shard, reason: str) -> None:
    """Put the pause on the shard's row, where `lotlens-admin shards paused` and the next process
    read it; written when the reason changes, not at every poll."""
    if shard.unreadable != reason:
        stage.store.note_unreadable(shard.shard_id, reason)

