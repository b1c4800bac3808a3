"""The quota pause as the work store keeps it on its building shards' rows, in memory, on a clock
the tests move (`clock`, seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

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


def _moment(clock: float) -> datetime:
    """A moment on the fake clock, as the store's rows name it."""
    return datetime.fromtimestamp(clock, UTC)
