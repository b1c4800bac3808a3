"""The stage's background loop: send due shards, watch batches, recover and reconcile."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import timedelta

from sqlalchemy import func, select

from lotlens_common.clock import utc_now
from lotlens_common.ops import heartbeat
from lotlens_common.stage import metrics, store
from lotlens_common.stage.collect import watch
from lotlens_common.stage.reconcile import reconcile
from lotlens_common.stage.runtime import StageRuntime
from lotlens_common.stage.submit import flush_due, recover_building
from lotlens_common.tables import stage_lots, stage_shards

log = logging.getLogger(__name__)

TICK_S = 0.2
RECOVERY_EVERY_S = 60.0


def run_stage_loop(rt: StageRuntime, stop: threading.Event) -> None:
    """Run until `stop`; failures are logged and counted, and the work stays in the tables."""
    asyncio.run(_loop(rt, stop))


async def _loop(rt: StageRuntime, stop: threading.Event) -> None:
    last_watch = last_recovery = 0.0
    while not stop.is_set():
        heartbeat(f"stage:{rt.spec.name}")
        now = time.monotonic()
        try:
            if now - last_recovery >= RECOVERY_EVERY_S:
                await recover_building(rt)
                if rt.direct is None:
                    await reconcile(rt)
                _prune(rt)
                last_recovery = now
            await flush_due(rt)
            if now - last_watch >= rt.settings.poll_interval_s:
                await watch(rt)
                _gauge(rt)
                last_watch = now
        except Exception as exc:
            metrics.openai_error(rt.spec.name, "loop", exc)
            log.exception("stage %s loop failed; retrying", rt.spec.name)
            await asyncio.sleep(min(5.0, rt.settings.poll_interval_s))
        await asyncio.sleep(TICK_S)


def _prune(rt: StageRuntime) -> None:
    settled_before = utc_now() - timedelta(hours=rt.settings.retention_h)
    with rt.engine.begin() as conn:
        pruned = store.prune(conn, rt.spec.name, settled_before)
    if pruned:
        log.info("pruned the work rows of %d finished jobs", pruned)


def _gauge(rt: StageRuntime) -> None:
    with rt.engine.begin() as conn:
        waiting = conn.execute(select(func.count()).where(
            stage_lots.c.stage == rt.spec.name, stage_lots.c.status == store.WAITING)).scalar_one()
        tokens = store.tokens_enqueued(conn, rt.spec.name)
        oldest_s = conn.execute(select(func.coalesce(func.extract(
            "epoch", func.now() - func.min(stage_shards.c.created_at)), 0)).where(
            stage_shards.c.stage == rt.spec.name, stage_shards.c.status == "submitted")).scalar_one()
    metrics.OLDEST_BATCH_AGE.labels(stage=rt.spec.name).set(float(oldest_s))
    metrics.LOTS_WAITING.labels(stage=rt.spec.name).set(waiting)
    metrics.TOKENS_ENQUEUED.labels(stage=rt.spec.name).set(tokens)
