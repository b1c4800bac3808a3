"""Recovering `building` shards: finish those whose builder died (adopt their batch, or build again).

A builder can stop between any two of its effects (a crash, a lost lock, a refused publish), and
leaves its shard `building`. Recovery relies on `submit.py`'s order of effects: the shard row is
committed before the batch is created, and the batch carries metadata naming the shard before its
id is recorded anywhere. So a `building` shard's batch, if one was made, is looked up by that
metadata before anything is created: no batch is lost and none is paid twice. A create answered
with a timeout or a 5xx may make its batch after the answer: the shard row says when it was asked,
and recovery waits for that batch a while before building again.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from lotlens_common.model.errors import ModelError
from lotlens_common.stage import metrics
from lotlens_common.stage.core import lifecycle
from lotlens_common.stage.key import SENDING, key_accepted, pause_for_key
from lotlens_common.stage.ports import Shard, Stage
from lotlens_common.stage.quota import QuotaPaused, may_build, pause_for_quota, quota_try
from lotlens_common.stage.record import SHARD_KEY, end_hold, put_on_record
from lotlens_common.stage.submit import Stopped, build

log = logging.getLogger(__name__)


async def recover_building(stage: Stage[Any]) -> None:
    """Finish shards whose builder died: adopt their batch if it exists, else build it again
    (unless the stage is paused: `quota.may_build`)."""
    building = stage.store.shards("building")
    ids = {shard.shard_id for shard in building}
    _forget_listings_but(stage, ids)
    if stage.held_shard not in ids:
        end_hold(stage, "is no longer building (another instance recorded its batch, or closed it)")
    # Held (`record.py`): the held shard alone, first, with no quota try. Another, refused the try (no
    # build while held), ended the round before it: the hold and a quota pause waited for each other.
    # Recorded, the rest go on: first those that may have a batch (a create asked), so a restarted
    # process meets a refused record before it builds: oldest first, a shard whose upload failed
    # before the outage was built ahead of one with a batch, and its record refused too.
    building.sort(key=lambda shard: (shard.shard_id != stage.held_shard, shard.create_asked_age_s is None))
    for shard in building:
        if stage.stopping.is_set() or stage.held_shard not in (None, shard.shard_id):
            return
        with stage.store.exclusive(shard.shard_id) as mine:
            current = stage.store.shard(shard.shard_id) if mine else None
            if current is None or current.status != "building":
                continue  # its builder is alive, or another instance finished it
            try:
                lots = stage.store.shard_lots(shard.shard_id)
                held = shard.shard_id == stage.held_shard
                # The held shard's batch is there, found at each watch: listed once a minute, it
                # was put on record up to a minute after Kafka took events again.
                if lots and not held and _listed_lately(stage, current):
                    continue  # its create may still land, and the listing a minute ago did not show it
                with quota_try(stage, wanted=bool(lots) and not held) as the_try:
                    found = await _find_shard_batch(stage, shard.shard_id) if lots else None
                    action = lifecycle.for_building(len(lots), found, current.create_asked_age_s)
                    if held and isinstance(action, lifecycle.Build | lifecycle.CloseEmpty):
                        end_hold(stage, "has no batch to put on record")  # kept, it held for good
                        if isinstance(action, lifecycle.Build):
                            # Listed with no quota try: built now, its images were checked for an
                            # upload a quota pause stops. The next watch builds it with one.
                            continue
                    if isinstance(action, lifecycle.CloseEmpty):
                        stage.store.close_shard(shard.shard_id, "empty", None)
                        continue
                    if isinstance(action, lifecycle.AwaitCreate):
                        log.info("shard %s of job %s: its batch may still land from a create whose "
                                 "answer was lost; not built again yet", shard.shard_id, shard.job_id,
                                 extra={"job_id": shard.job_id, "shard_id": shard.shard_id})
                        continue
                    if isinstance(action, lifecycle.Build) and not may_build(stage, recovering=True):
                        # Paused: a batch made now (under another project's key, say) and listed
                        # took the unreadable one for lost, and its lots were paid for twice. Or
                        # held: OpenAI's queue is full, and it would be refused the same way.
                        continue
                    log.warning("recovering shard %s of job %s: %s", shard.shard_id, shard.job_id,
                                type(action).__name__,
                                extra={"job_id": shard.job_id, "shard_id": shard.shard_id})
                    if isinstance(action, lifecycle.Adopt):
                        await put_on_record(stage, shard.shard_id, lots,
                                            tuple(lot.lot_id for lot in lots), action.batch)
                    else:
                        await build(stage, shard.shard_id, lots, the_try)
                key_accepted(stage)
            except (Stopped, QuotaPaused):
                return  # still `building`: the next process, or the pause's try, recovers it
            except ModelError as exc:
                if pause_for_key(stage, exc, SENDING) or pause_for_quota(stage, exc, shard.shard_id):
                    return  # every other shard's call would be refused alike this round
                log.warning("recovering shard %s failed; the next round tries again: %s",
                            shard.shard_id, exc, extra={"job_id": shard.job_id, "shard_id": shard.shard_id})
            except Exception as exc:
                metrics.openai_error(stage.spec.name, "batches", exc)
                log.exception("recovering shard %s failed; the next round tries again", shard.shard_id,
                              extra={"job_id": shard.job_id, "shard_id": shard.shard_id})


def _listed_lately(stage: Stage[Any], shard: Shard) -> bool:
    """Whether the shard's create may still land and its batches were listed for it lately; if it
    may land and they were not, they are about to be (noted now)."""
    if not lifecycle.may_land(shard.create_asked_age_s):
        stage.listed_while_landing.pop(shard.shard_id, None)
        return False
    now = time.monotonic()
    if now - stage.listed_while_landing.get(shard.shard_id, -math.inf) < lifecycle.LIST_WHILE_LANDING_S:
        return True
    stage.listed_while_landing[shard.shard_id] = now
    return False


def _forget_listings_but(stage: Stage[Any], building: set[str]) -> None:
    """Keep the listing times of the shards still building only (others were sent or closed)."""
    for shard_id in stage.listed_while_landing.keys() - building:
        del stage.listed_while_landing[shard_id]


async def _find_shard_batch(stage: Stage[Any], shard_id: str) -> dict[str, Any] | None:
    """The batch carrying the shard's metadata, if OpenAI has one (a failure is counted)."""
    try:
        return await stage.batches.find_batch({SHARD_KEY: shard_id})
    except ModelError as exc:
        metrics.openai_error(stage.spec.name, "batches", exc)
        raise
