"""The stage's background loop: send due shards, watch batches, recover and reconcile."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import timedelta
from typing import Any

from lotlens_common.clock import utc_now
from lotlens_common.model.errors import ModelError
from lotlens_common.ops import heartbeat
from lotlens_common.stage import metrics
from lotlens_common.stage.collect import watch
from lotlens_common.stage.core.lifecycle import FINISHED
from lotlens_common.stage.key import LISTING, key_refused, pause_for_key
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.reconcile import reconcile
from lotlens_common.stage.recover import recover_building
from lotlens_common.stage.submit import flush_due
from lotlens_common.stage.unreadable import take_up_recorded_pauses

log = logging.getLogger(__name__)

TICK_S = 0.2
RECOVERY_EVERY_S = 60.0


def run_stage_loop(stage: Stage[Any], stop: threading.Event) -> None:
    """Run until `stop`; failures are logged and counted, and the work stays in the tables. Its
    figures are on /metrics meanwhile, read from the store at each scrape (`figures.py`)."""
    metrics.start(stage.spec.name)
    metrics.FIGURES.watch(stage.spec.name, stage.store.figures, stage.store.lots_waiting,
                          paused_here=lambda: key_refused(stage))
    stage.stopping = stop
    try:
        asyncio.run(_loop(stage, stop))
    finally:
        metrics.FIGURES.forget(stage.spec.name)


async def step(stage: Stage[Any], watching: bool) -> None:
    """One round: send what is due, and watch the batches when it is time (or one just finished).

    Shards left `building` (their send failed, e.g. the API was unreachable) are retried at each
    watch, not only by the minutely housekeeping: a stand-in or API restart cost a minute of
    latency otherwise (found by `make chaos`). Shards being built right now are skipped: their
    builder holds their lock. The pauses recorded on the shard rows are held before anything is
    built (a new process built a batch first, and the listing that showed it made the unreadable
    batch look lost).
    """
    take_up_recorded_pauses(stage)
    if watching:
        await recover_building(stage)
    created = await flush_due(stage)
    # A batch that is finished when created (direct mode) is collected at once.
    if watching or any(batch.get("status") in FINISHED for batch in created):
        # Sending again after each collection: collecting a 9,000-lot batch takes seconds, and a
        # job's last lots (arrived meanwhile) waited behind every batch of the round.
        await watch(stage, after_collect=lambda: flush_due(stage))


async def housekeep(stage: Stage[Any]) -> None:
    """Recover building shards, reconcile, prune finished jobs."""
    take_up_recorded_pauses(stage)
    await recover_building(stage)
    await reconcile(stage)
    pruned = stage.store.prune(utc_now() - timedelta(hours=stage.settings.retention_h))
    if pruned:
        log.info("pruned the work rows of %d finished jobs", pruned)


async def _loop(stage: Stage[Any], stop: threading.Event) -> None:
    last_watch = last_recovery = 0.0
    while not stop.is_set():
        heartbeat(f"stage:{stage.spec.name}")
        now = time.monotonic()
        if now - last_recovery >= RECOVERY_EVERY_S:
            last_recovery = now
            await _housekeep_apart(stage)
        pause = TICK_S
        try:
            watching = now - last_watch >= stage.settings.poll_interval_s
            await step(stage, watching)
            if watching:
                last_watch = now
        except Exception as exc:
            metrics.openai_error(stage.spec.name, "loop", exc)
            log.exception("stage %s loop failed; retrying", stage.spec.name)
            pause += min(5.0, stage.settings.poll_interval_s)
        await asyncio.sleep(pause)


async def _housekeep_apart(stage: Stage[Any]) -> None:
    """Housekeeping whose failure leaves the round alone: a batch listing that kept failing (429s
    on that one endpoint) once ended every round before anything was sent or collected."""
    try:
        await housekeep(stage)
    except Exception as exc:
        metrics.openai_error(stage.spec.name, "housekeeping", exc)
        if isinstance(exc, ModelError) and pause_for_key(stage, exc, LISTING):
            return  # the pause is logged once, not a traceback a minute
        log.exception("stage %s housekeeping failed; sending and collecting go on, it runs again in "
                      "%.0f s", stage.spec.name, RECOVERY_EVERY_S)
