"""The stage-wide pauses as the work store keeps them, in memory: the quota pause on its building
shards' rows, on a clock the tests move (`clock`, seconds), and the hold after OpenAI's queue
refused a batch (`queue_hold`, on the wall clock, as the stage's batch times are)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from lotlens_common.stage.core.queue_hold import HeldNow, QueueHold
from lotlens_common.stage.ports import QuotaPause, Shard


@dataclass
class Refusal:
    """A building shard's row holding the pause: why, since when, its next try."""

    reason: str
    since: float
    retry_at: float


class QuotaRows:
    """`WorkStore`'s quota pause methods, for a store with `shards_by_id`."""

    shards_by_id: dict[str, Shard]

    def __init__(self) -> None:
        self.refusals: dict[str, Refusal] = {}
        self.clock = 0.0

    def _holding(self) -> dict[str, Refusal]:
        return {shard_id: refusal for shard_id, refusal in self.refusals.items()
                if self.shards_by_id[shard_id].status == "building"}

    def quota_pause(self) -> QuotaPause | None:
        held = self._holding().values()
        if not held:
            return None
        latest = max(held, key=lambda refusal: refusal.retry_at)
        since = min(refusal.since for refusal in held)
        return QuotaPause(latest.reason, self.clock - since, latest.retry_at - self.clock)

    def note_quota_refused(self, shard_id: str, reason: str, wait_s: float) -> None:
        if self.shards_by_id[shard_id].status == "building":
            pause = self.quota_pause()
            since = self.clock - pause.paused_s if pause is not None else self.clock
            self.refusals[shard_id] = Refusal(reason, since, self.clock + wait_s)

    def take_quota_try(self, wait_s: float) -> datetime | None:
        held = self._holding()
        if not held or any(refusal.retry_at > self.clock for refusal in held.values()):
            return None
        for refusal in held.values():
            refusal.retry_at = self.clock + wait_s
        return _moment(self.clock + wait_s)

    def give_back_quota_try(self, moved_to: datetime) -> None:
        for refusal in self._holding().values():
            if _moment(refusal.retry_at) == moved_to:
                refusal.retry_at = self.clock

    def end_quota_pause(self) -> None:
        for shard_id in self._holding():
            del self.refusals[shard_id]


class QueueHoldRow:
    """`WorkStore`'s queue hold methods: the stage's one row, shared by the stage's instances."""

    def __init__(self) -> None:
        super().__init__()
        self.queue_hold = QueueHold()

    def queue_held(self) -> HeldNow:
        return self.queue_hold.now(time.time())

    def note_queue_refused(self, created_at: float) -> float | None:
        return self.queue_hold.refused(created_at, time.time())

    def note_queue_admitted(self, created_at: float) -> None:
        self.queue_hold.admitted(created_at)


def _moment(clock: float) -> datetime:
    """A moment on the fake clock, as the store's rows name it."""
    return datetime.fromtimestamp(clock, UTC)
