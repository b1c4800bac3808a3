"""The runner's work store: the SQL of `postgres.py`, one transaction per call."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy import Connection, Engine, func, text, update

from lotlens_common.stage.adapters import postgres as sql
from lotlens_common.stage.adapters import (
    postgres_figures,
    postgres_locks,
    postgres_prune,
    postgres_queue_hold,
    postgres_quota,
    postgres_release,
)
from lotlens_common.stage.core.queue_hold import HeldNow
from lotlens_common.stage.core.rule import WaitingJob
from lotlens_common.stage.figures import StageFigures
from lotlens_common.stage.ports import Closing, Fit, QuotaPause, Settlement, Shard
from lotlens_common.stage.work import LotWork, StageWork
from lotlens_common.tables import stage_shards

W = TypeVar("W", bound=StageWork)

# Each reading is one statement: it ends within 10 s, well under the collector's staleness bound
# (`figures.STALE_S`, 60 s; a reading that landed older was left out as it landed). Cut short, it
# leaves its last good figures to age. Counting a queue of millions of lots takes seconds on a busy
# database: scrapes do not wait for it, nor does the reading of the shards (`figures.py`).
FIGURES_TIMEOUT_MS = 10_000


class PostgresWorkStore(Generic[W]):
    """One stage's rows in the work tables."""

    def __init__(self, engine: Engine, stage: str, work_type: type[W]) -> None:
        self.engine, self.stage, self.work_type = engine, stage, work_type
        self._held: dict[str, Connection] = {}

    def waiting_jobs(self, cancelled_only: bool = False) -> list[WaitingJob]:
        """Jobs with waiting lots (only the cancelled ones')."""
        with self.engine.begin() as conn:
            return sql.waiting_jobs(conn, self.stage, cancelled_only)

    def tokens_enqueued(self) -> int:
        """Estimated tokens OpenAI still holds."""
        with self.engine.begin() as conn:
            return sql.tokens_enqueued(conn, self.stage)

    def claim(self, job_id: str, shard_id: str, limit: int, fit: Fit[W]) -> list[LotWork[W]]:
        """Read the queue's next lots, keep what fits, and record the shard over their places: one
        transaction, and no lot row written (what does not fit stays where it is)."""
        with self.engine.begin() as conn:
            queued = sql.next_in_queue(conn, self.stage, job_id, limit, self.work_type)
            lots = [lot for _, lot in queued]
            keep, tokens = fit(lots)
            if keep:
                sql.create_shard(conn, self.stage, shard_id, lots[:keep], tokens,
                                 (queued[0][0], queued[keep - 1][0]))
            return lots[:keep]

    def claim_named(self, job_id: str, lot_ids: Sequence[str], shard_id: str,
                    tokens: Callable[[list[LotWork[W]]], int]) -> list[LotWork[W]]:
        """Claim these lots (those still waiting) into a new shard."""
        with self.engine.begin() as conn:
            lots = sql.claim_named(conn, self.stage, job_id, lot_ids, shard_id, self.work_type)
            if lots:
                sql.create_shard(conn, self.stage, shard_id, lots, tokens(lots))
            return lots

    @contextmanager
    def exclusive(self, key: str) -> Iterator[bool]:
        """An advisory lock, released with its connection."""
        with postgres_locks.exclusive(self.engine, key, self._held) as mine:
            yield mine

    def holds(self, key: str) -> bool:
        """Whether this process still holds `key` (its lock's session survived)."""
        conn = self._held.get(key)
        return conn is not None and postgres_locks.still_held(conn)

    def shards(self, status: str) -> list[Shard]:
        """Shards in a status, oldest first."""
        with self.engine.begin() as conn:
            return sql.shards(conn, self.stage, status)

    def shard(self, shard_id: str) -> Shard | None:
        """One shard."""
        with self.engine.begin() as conn:
            return sql.shard(conn, shard_id)

    def shard_lots(self, shard_id: str, sent: Mapping[str, LotWork[W]] | None = None) -> list[LotWork[W]]:
        """The lots a shard still holds (their work from `sent` when it has them all)."""
        with self.engine.begin() as conn:
            return sql.shard_lots(conn, self.stage, shard_id, self.work_type, sent)

    def shard_trace(self, shard_id: str) -> dict[str, str]:
        """The job's trace context, as one of the shard's lots keeps it."""
        with self.engine.begin() as conn:
            return sql.shard_trace(conn, self.stage, shard_id)

    def save_prepared(self, job_id: str, settled: Sequence[str], changed: Sequence[LotWork[W]]) -> None:
        """Settled lots done, changed work kept."""
        with self.engine.begin() as conn:
            sql.set_status(conn, self.stage, job_id, settled, sql.DONE)
            sql.save_work(conn, self.stage, changed)

    def requeue(self, job_id: str, lot_ids: Sequence[str], reason: str | None = None,
                sent: bool = True) -> None:
        """Lots back to the end of their queue (the send counted when it was `sent`)."""
        with self.engine.begin() as conn:
            sql.requeue(conn, self.stage, job_id, lot_ids, reason, sent)

    def note_create_asked(self, shard_id: str, asked: bool) -> None:
        """A create is asked for the shard now, or it was refused."""
        with self.engine.begin() as conn:
            conn.execute(update(stage_shards).where(stage_shards.c.shard_id == shard_id).values(
                create_asked_at=func.now() if asked else None, updated_at=func.now()))

    def record_batch(self, shard_id: str, batch_id: str, lot_count: int, created_at: float | None,
                     tokens: int, batch_status: str | None = None) -> bool:
        """The shard's batch is on record, with when OpenAI created it, its lots' tokens and its
        status; whether it was still `building` (a record coming late, from a builder whose lock
        went, set a shard another instance had recorded and collected back to `submitted`)."""
        with self.engine.begin() as conn:
            return conn.execute(update(stage_shards).where(
                stage_shards.c.shard_id == shard_id, stage_shards.c.status == "building").values(
                batch_id=batch_id, status="submitted", lot_count=lot_count, estimated_tokens=tokens,
                updated_at=func.now(), batch_status=batch_status,
                batch_created_at=None if created_at is None else func.to_timestamp(created_at))).rowcount == 1

    def note_batch_status(self, shard_id: str, batch_status: str) -> None:
        """The batch's latest status."""
        with self.engine.begin() as conn:
            sql.note_batch_status(conn, shard_id, batch_status)

    def note_unreadable(self, shard_id: str, reason: str | None) -> None:
        """Why the shard's batch cannot be read (None: it can be again)."""
        with self.engine.begin() as conn:
            postgres_release.note_unreadable(conn, shard_id, reason)

    def close_shard(self, shard_id: str, status: str, batch_status: str | None) -> None:
        """The shard is finished."""
        with self.engine.begin() as conn:
            sql.close_shard(conn, shard_id, status, batch_status)

    def quota_pause(self) -> QuotaPause | None:
        """The stage's quota pause, if a building shard holds one."""
        with self.engine.begin() as conn:
            return postgres_quota.quota_pause(conn, self.stage)

    def note_quota_refused(self, shard_id: str, reason: str, wait_s: float) -> None:
        """The shard's batch was refused for the quota: it holds the pause."""
        with self.engine.begin() as conn:
            postgres_quota.note_refused(conn, self.stage, shard_id, reason, wait_s)

    def take_quota_try(self, wait_s: float) -> datetime | None:
        """Take the pause's due try: the next try's time it set (for the hand-back), or None when
        no try was due or another instance took it."""
        with self.engine.begin() as conn:
            return postgres_quota.take_try(conn, self.stage, wait_s)

    def give_back_quota_try(self, moved_to: datetime) -> None:
        """The try taken asked no create: it is due again, where a refusal since set no wait."""
        with self.engine.begin() as conn:
            postgres_quota.give_back_try(conn, self.stage, moved_to)

    def end_quota_pause(self) -> None:
        """A batch was created: the pause ends."""
        with self.engine.begin() as conn:
            postgres_quota.end(conn, self.stage)

    def queue_held(self) -> HeldNow:
        """How long a refusal of OpenAI's queue, collected by any instance, still holds new batches
        back (0: it does not), after how many refusals in a row."""
        with self.engine.begin() as conn:
            return postgres_queue_hold.held(conn, self.stage)

    def note_queue_refused(self, created_at: float) -> float | None:
        """A batch created then was refused as the queue was full: the stage's hold from now, if it grew."""
        with self.engine.begin() as conn:
            return postgres_queue_hold.change(
                conn, self.stage, lambda hold, now_s: hold.refused(created_at, now_s), start=True)

    def note_queue_admitted(self, created_at: float) -> None:
        """A batch created then got past validation (it may end the stage's series of refusals)."""
        with self.engine.begin() as conn:
            postgres_queue_hold.change(
                conn, self.stage, lambda hold, _: hold.admitted(created_at), start=False)

    def settle(self, job_id: str, settlement: Settlement, closing: Closing | None = None) -> None:
        """Lot outcomes, in one transaction.

        The last chunk's done lots are not written: most of a shard's lots succeed, and marking
        each was a row write per lot (about a tenth of the pipeline's time). Closing the shard
        `collected`, in the same transaction, settles every lot it still holds
        (`sql.lot_statuses`). An earlier chunk's are (a shard over `settle.CHUNK` lots): left
        unwritten, a collection cut short after them (a crash) left them the shard's, and a
        batch then given up on, released, or whose output was gone sent them again (paid
        twice), or failed them after they were announced done.
        """
        with self.engine.begin() as conn:
            # The job's queue first (requeue locks it), as every other transaction takes them.
            for reason, lot_ids in settlement.again.items():
                sql.requeue(conn, self.stage, job_id, lot_ids, reason)
            for reason, lot_ids in settlement.unsent.items():
                sql.requeue(conn, self.stage, job_id, lot_ids, reason, sent=False)
            sql.fail(conn, self.stage, job_id, settlement.failed)
            sql.set_status(conn, self.stage, job_id, settlement.cancelled, sql.CANCELLED)
            sql.save_work(conn, self.stage, settlement.rework)
            if closing is None:
                sql.set_status(conn, self.stage, job_id, settlement.done, sql.DONE)
            else:
                sql.close_shard(conn, closing.shard_id, "collected", closing.batch_status)

    def cancelled_jobs(self, job_ids: Sequence[str]) -> set[str]:
        """Cancelled jobs among these."""
        if not job_ids:  # an idle stage's every watch: no transaction for an empty answer
            return set()
        with self.engine.begin() as conn:
            return sql.cancelled_jobs(conn, self.stage, job_ids)

    def known_batches(self, batch_ids: Sequence[str]) -> set[str]:
        """Batch ids on record."""
        with self.engine.begin() as conn:
            return sql.known_batches(conn, batch_ids)

    def job_known(self, job_id: str) -> bool:
        """Whether the stage ever had the job."""
        with self.engine.begin() as conn:
            return sql.job_known(conn, self.stage, job_id)

    def figures(self) -> StageFigures:
        """The stage's shards' and queue hold's figures for /metrics (`_for_metrics`)."""
        with self._for_metrics() as conn:
            return postgres_figures.figures(conn, self.stage)

    def lots_waiting(self) -> int:
        """The stage's lots not in a batch yet, for /metrics (`_for_metrics`)."""
        with self._for_metrics() as conn:
            return postgres_figures.lots_waiting(conn, self.stage)

    @contextmanager
    def _for_metrics(self) -> Iterator[Connection]:
        """A transaction whose statements are cut short past `FIGURES_TIMEOUT_MS` (a lock waited
        for included): a scrape's reading that ran on behind a slow database only delayed the next
        one (`figures.py` keeps the last good reading meanwhile, until it is stale)."""
        with self.engine.begin() as conn:
            conn.execute(text("SELECT set_config('statement_timeout', :ms, true), "
                              "set_config('lock_timeout', :ms, true)"), {"ms": f"{FIGURES_TIMEOUT_MS}ms"})
            yield conn

    def prune(self, settled_before: datetime) -> int:
        """Forget finished jobs."""
        return postgres_prune.prune(self.engine, self.stage, settled_before)

