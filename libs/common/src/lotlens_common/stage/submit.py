"""Sending shards: claim waiting lots, write the JSONL, create the batch, put it on record.

Order of effects, and why: the shard row (with its lots) is committed first; the batch is created
with metadata naming the shard; the BatchSubmitted event is published; only then is the batch id
written to the shard row. A crash anywhere leaves a `building` shard; `recover.py` finishes it,
relying on this order (it looks the batch up by its metadata before creating another).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import tempfile
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from lotlens_common.clock import utc_now
from lotlens_common.events import LotFailed
from lotlens_common.faults import fault_point
from lotlens_common.model.errors import (
    ModelError,
    ModelQuotaExceededError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelUnreachableError,
)
from lotlens_common.ops import heartbeat
from lotlens_common.stage import metrics
from lotlens_common.stage.adapters.jsonl import JsonlWriter
from lotlens_common.stage.cancel import drop_cancelled, job_cancelled
from lotlens_common.stage.core import lifecycle
from lotlens_common.stage.core.rule import Shares, plan_flushes, recordable
from lotlens_common.stage.files import forget_file
from lotlens_common.stage.key import SENDING, pause_for_key
from lotlens_common.stage.ports import Fit, Settlement, Stage, about_lot
from lotlens_common.stage.quota import (
    QuotaPaused,
    QuotaTry,
    check_upload,
    may_build,
    pause_for_quota,
    queue_held,
    quota_accepted,
    recorded_pause,
)
from lotlens_common.stage.record import batch_metadata, put_on_record
from lotlens_common.stage.traced import lots_span, openai_call
from lotlens_common.stage.work import LotWork

log = logging.getLogger(__name__)

# A create failing so made no batch: refused (429, another 4xx), or no connection was ever made.
NOT_CREATED = (ModelRateLimitedError, ModelQuotaExceededError, ModelRequestError, ModelUnreachableError)
PREPARE_CHUNK = 1000
# How often a chunk's preparation looks whether the process is stopping.
STOP_POLL_S = 0.2
T = TypeVar("T")


async def flush_due(stage: Stage[Any]) -> list[dict[str, Any]]:
    """Send every shard the batching rule says is due; the batches created."""
    # Asked every round, with lots waiting or not: it also sees another instance end a quota pause,
    # or collect a refusal of OpenAI's queue for the model (the queue hold).
    building = may_build(stage)
    # A cancelled job's lots first: dropping them makes no batch, and a pause held them with it.
    # Paused, only theirs are read: the other queues wait, and were counted at every tick.
    jobs = drop_cancelled(stage, stage.store.waiting_jobs(cancelled_only=not building))
    if not building or not jobs:
        return []  # paused: a batch we made cannot be seen, the key, the quota or the queue is refused
    limit = stage.token_limit()
    # Without a budget there is nothing to count against (the gauge is read when scraped).
    enqueued = stage.store.tokens_enqueued() if limit else 0
    # Whose lots were claimed when: the turns between clients go round (`rule.by_client`).
    stage.served_at = {job.client_id: stage.served_at.get(job.client_id, -math.inf) for job in jobs}
    plan = plan_flushes(jobs, utc_now(), stage.settings.window_s,
                        stage.settings.max_requests_per_batch, enqueued, limit, stage.served_at)
    client_of = {job.job_id: job.client_id for job in jobs}
    shares = Shares(limit - enqueued, len({client_of[flush.job_id] for flush in plan}),
                    nothing_enqueued=enqueued == 0) if limit else None
    created: list[dict[str, Any]] = []
    for number, flush in enumerate(plan):
        if shares is not None and number:
            # Read again after each shard, as it was put on record: charged with all it claimed, a
            # shard whose lots went back to the queue unsent (`Prepared.deferred`) left the round's
            # later jobs no room.
            shares.left = limit - stage.store.tokens_enqueued()
        if shares is not None and (shares.left <= 0 or shares.blocked):
            break  # the budget is full, or what is left is kept for the client served longest ago
        if stage.stopping.is_set() or recorded_pause(stage) is not None or queue_held(stage):
            # Read before each claim, not only by a process that knows of the pause: one that had
            # not seen another instance's refusal claimed and prepared a shard (image checks,
            # minutes) for its upload to be stopped; past the queue's, each batch was refused too.
            break
        shard_id = f"{stage.spec.name}-{uuid.uuid4().hex}"
        with stage.store.exclusive(shard_id):
            lots = stage.store.claim(flush.job_id, shard_id, flush.lots,
                                     _fit(stage, shares, client_of[flush.job_id]))
            if not lots:
                # Nothing of it fits its client's share, or another instance claimed it: the jobs
                # after it, other clients' among them, may still have room.
                continue
            stage.served_at[client_of[flush.job_id]] = time.monotonic()
            if shares is not None:
                shares.spend(sum(map(stage.spec.estimate_tokens, lots)))
            fault_point(f"{stage.spec.name}.after_shard_claimed")
            try:
                batch = await build(stage, shard_id, lots)
            except Stopped:
                break  # the shard stays `building`: recovery sends it after the restart
            except QuotaPaused:
                break  # another instance's refusal paused the stage: recovery sends it after
            except ModelError as exc:
                # The shard stays `building`: recovery finds or rebuilds its batch later.
                if pause_for_key(stage, exc, SENDING) or pause_for_quota(stage, exc, shard_id):
                    break
                log.exception("sending shard %s of job %s failed", shard_id, flush.job_id,
                              extra={"job_id": flush.job_id, "shard_id": shard_id})
                continue
            except Exception as exc:
                # PostgreSQL or Kafka (a batch Kafka will not record): counted, or the lots wait
                # with no alert while each recovery adopts the batch at OpenAI and fails again.
                metrics.openai_error(stage.spec.name, "batches", exc)
                log.exception("sending shard %s of job %s failed; recovery sends it again", shard_id,
                              flush.job_id, extra={"job_id": flush.job_id, "shard_id": shard_id})
                if stage.held_shard is not None:
                    break  # its batch exists, not on record: the next would not be either
                continue
            if batch is not None:
                created.append(batch)
    return created


def _fit(stage: Stage[Any], shares: Shares | None, client_id: str) -> Fit[Any]:
    """The plan counts lots; the budget's shares count each lot's own estimate, and the shard's
    event its ids."""

    def fit(lots: list[LotWork[Any]]) -> tuple[int, int]:
        costs = [stage.spec.estimate_tokens(lot) for lot in lots]
        keep = recordable([lot.lot_id for lot in lots])
        if shares is not None:
            keep = shares.fits(client_id, costs[:keep])
        return keep, sum(costs[:keep])

    return fit


class Stopped(Exception):
    """The process is stopping: a shard was left `building` between two of its chunks."""


class LostShardLock(RuntimeError):
    """This process no longer holds the shard it was building: recovery owns it now."""


async def build(stage: Stage[Any], shard_id: str, lots: list[LotWork[Any]],
                the_try: QuotaTry | None = None) -> dict[str, Any] | None:
    """Write the shard's file, upload it, create its batch and put it on record (`the_try`:
    recovery's part in the quota pause)."""
    with lots_span(f"{stage.spec.name} batch submit", lots, shard_id):
        return await _build(stage, shard_id, lots, the_try)


async def _build(stage: Stage[Any], shard_id: str, lots: list[LotWork[Any]],
                 the_try: QuotaTry | None) -> dict[str, Any] | None:
    job_id = lots[0].job_id
    if job_cancelled(stage, shard_id, job_id):
        return None
    folder = stage.settings.work_dir or tempfile.gettempdir()
    writer = JsonlWriter(Path(folder) / f"{shard_id}.jsonl", stage.file_byte_limit())
    prepared: list[LotWork[Any]] = []
    held_back: list[str] = []
    try:
        # Chunk by chunk, so a 50,000-request shard never holds all its request bodies at once.
        for start in range(0, len(lots), PREPARE_CHUNK):
            if stage.stopping.is_set():
                raise Stopped(shard_id)
            requests, deferred = await _unless_stopped(stage, shard_id, _prepare(
                stage, shard_id, lots[start:start + PREPARE_CHUNK]))
            writer.write(requests)
            prepared += [lot for lot, _ in requests]
            # A round preparing a big shard (many slow image hosts) outlasted the liveness probe's
            # 600 s: the pod was restarted mid-round, and recovery began the same checks again.
            heartbeat(f"stage:{stage.spec.name}")
            if deferred:
                # Out of its time (one job's image hosts that never answer): the rest waits for the
                # next round, and this one moves on to the other jobs' shards, sending what is ready.
                held_back = [lot.lot_id for lot in (*deferred, *lots[start + PREPARE_CHUNK:])]
                break
        # As if never claimed, like the file's overflow: a crash before this leaves them in the
        # `building` shard, and recovery prepares them again.
        stage.store.requeue(job_id, [*writer.overflow, *held_back], sent=False)
        if not writer.written:
            stage.store.close_shard(shard_id, "empty", None)
            return None
        check_upload(stage, the_try)
        try:
            with openai_call("files.create"):
                file_id = await stage.batches.upload_batch_file(writer.close())
        except ModelError as exc:
            metrics.openai_error(stage.spec.name, "files", exc)
            if not isinstance(exc, ModelRequestError) or not lifecycle.too_large(exc.code, str(exc)):
                raise
            stage.shrink_files(writer.size, str(exc))
            stage.store.requeue(job_id, writer.written, str(exc), sent=False)
            stage.store.close_shard(shard_id, "empty", None)
            return None
    finally:
        writer.discard()
    attempt = max(lot.attempts for lot in lots)
    if not stage.store.holds(shard_id):
        # Fencing: the lock went with a database restart and another instance may be recovering
        # this shard right now; creating the batch too would pay for it twice (found by make chaos).
        raise LostShardLock(f"shard {shard_id} is no longer locked by this process; not creating its batch")
    if job_cancelled(stage, shard_id, job_id):
        # Cancelled while the shard was prepared, or since a create failed (recovery built it
        # again, created the batch, and cancelled it at the next watch: billed for what it ran).
        await forget_file(stage, file_id)
        return None
    if the_try is not None:
        the_try.create_asked = True  # refused or not, the quota pause's try is used
    # Before the call: answered with a timeout or a 5xx, or cut by a crash, it may make its batch
    # anyway, later than recovery's next listing (`lifecycle.CREATE_LANDS_S`). Direct mode's create
    # calls the model for minutes: noted after it, a failover meanwhile had another replica's
    # recovery, seeing no note and no batch on its own folder, call the model for the same lots.
    stage.store.note_create_asked(shard_id, True)
    try:
        with openai_call("batches.create", {"lotlens.shard_id": shard_id}):
            batch = await stage.batches.create_batch(
                file_id, batch_metadata(stage.spec.name, job_id, shard_id, attempt))
    except ModelError as exc:
        metrics.openai_error(stage.spec.name, "batches", exc)
        if not isinstance(exc, NOT_CREATED):
            raise
        # Refused, so no batch reads this file, and the next round uploads it again: without
        # this, a create refused for hours filled the project's file storage (refused for the
        # quota, it was kept: one more file of customer data a round, for 30 days). After a 5xx,
        # a timeout or a dropped connection the batch may exist, and its file is kept.
        stage.store.note_create_asked(shard_id, False)
        await forget_file(stage, file_id)
        raise
    except Exception:
        if not stage.batches.creates_land_late:
            # Direct mode's batch is made whole by the call or not at all (its folder's disk full):
            # kept, the note held its shard back 10 minutes for a batch that cannot land.
            stage.store.note_create_asked(shard_id, False)
        raise
    quota_accepted(stage)
    fault_point(f"{stage.spec.name}.after_batch_created")
    await put_on_record(stage, shard_id, lots, tuple(writer.written), batch)
    # The store says which of them the shard holds (a file's overflow went back to the queue).
    stage.remember_sent(shard_id, prepared)
    return batch


async def _unless_stopped(stage: Stage[Any], shard_id: str, preparing: Coroutine[Any, Any, T]) -> T:
    """`preparing`'s result, or `Stopped` once the process is stopping (the preparation cancelled).

    A chunk's preparation checks its lots' images: 1,000 lots against slow hosts take minutes, and
    a stop waiting for them outlasted the pod's grace period (120 s), so the kubelet killed the
    process (found by `make chaos`'s `sigterm`). Cancelled, it has written nothing: its writes
    come after its last `await`. The shard stays `building`, as between chunks.
    """
    task = asyncio.ensure_future(preparing)
    while not task.done():
        await asyncio.wait({task}, timeout=STOP_POLL_S)
        if stage.stopping.is_set() and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise Stopped(shard_id)
    return task.result()


async def _prepare(stage: Stage[Any], shard_id: str, lots: list[LotWork[Any]]
                   ) -> tuple[list[tuple[LotWork[Any], dict[str, Any]]], list[LotWork[Any]]]:
    """Requests for the lots that need the model, and the lots left for later (`Prepared.deferred`);
    the others are settled here and now."""
    prepared = await stage.spec.prepare(lots)
    job_id = lots[0].job_id
    # Only what preparation changed is written: rewriting every claimed row's work doubled the
    # rows the claim had just written (a quarter of a 20,000-lot shard's submit time).
    claimed = {lot.lot_id: lot.work for lot in lots}
    # The same object is unchanged: comparing a lot's work field by field is 1 us a lot.
    changed = [lot for lot, _ in prepared.requests
               if lot.work is not claimed[lot.lot_id] and lot.work != claimed[lot.lot_id]]
    if prepared.settled:
        # Their verdicts are kept before their events go out, and the lots marked settled after:
        # a crash in between leaves the verdicts to the next `prepare`, which settles the lots
        # alike (same event ids). Decided afresh, an image host back by then had a lot already
        # announced failed sent to the model and described.
        stage.store.save_prepared(job_id, [], [lot for lot, _ in prepared.settled
                                               if lot.work != claimed[lot.lot_id]])
        stage.publisher.publish(lots[0].client_id, [about_lot("prepare", shard_id, lot.lot_id, event)
                                                    for lot, event in prepared.settled])
    failures = Settlement.empty()
    for lot, event in prepared.settled:
        if isinstance(event, LotFailed):
            failures.failed.setdefault(event.reason, []).append(lot.lot_id)
    if failures.failed:
        # Failed with their reason, as a collection's failures are: marked done, lots none of
        # whose images could be fetched read as successes in `lotlens-admin jobs show`.
        stage.store.settle(job_id, failures)
    stage.store.save_prepared(job_id, [lot.lot_id for lot, event in prepared.settled
                                       if not isinstance(event, LotFailed)], changed)
    return prepared.requests, prepared.deferred
