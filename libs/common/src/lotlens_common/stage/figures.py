"""The stage's figures on /metrics, read from its store when a scrape asks for them.

The lots waiting, the tokens enqueued, the oldest batch's age, the batches by status, the queue
hold and the pauses on the shards' rows are the stage's, alike for every replica. Set by each
replica's rounds, they were what that replica last read: one busy in a long round (collecting or
building a big file, minutes, its heartbeat beating) went on exporting the refusals in a row and
the lots waiting it had read, after another replica's batch had been admitted, and
LotLensOpenAIQueueHeld (`max` over the replicas) paged on a hold that had ended; so did
LotLensOpenAIAuthenticationErrors on a quota pause another replica's batch had ended. Now a scrape
that finds a reading over `fresh_s` old starts one, on a thread of its own, and waits for it at
most `wait_s`: a database that does not answer never holds /metrics (and the round-failure
counters LotLensStageRoundsFailing reads) past Prometheus's timeout. The last good reading stands,
aged, until it is `stale_s` old, through slow or failed readings: left out at the first failure, a
series lost its sample for a scrape and an alert's `for:` (30 minutes for LotLensOpenAIQueueHeld)
began again. Past `stale_s` it is not exported at all: no figure rather than a stale one.

There are two readings, each a statement, a thread and an age of its own: the shards' and the
queue hold's rows (`StageFigures`, a few rows: milliseconds), and the lots waiting, a count of
queues that may hold millions (seconds on a busy database). In one statement, a count cut short by
its timeout for a minute took the pause with it: with the quota out for hours, as lots pile up,
LotLensOpenAIAuthenticationErrors resolved while the stage still submitted nothing.

One pause is no row's: OpenAI refusing this process's key (`key.py`). The key is each process's
own, and only its own calls show it accepted again, so `paused_here` asks its memory at each
scrape, and a pause it holds is exported while the rows cannot be read too: left out with them
(PostgreSQL down for a minute), the alert resolved on a revoked key, and paged again once they were.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lotlens_common.stage.core.lifecycle import RUNNING
from lotlens_common.stage.core.queue_hold import HeldNow

log = logging.getLogger(__name__)

T = TypeVar("T")

# One reading serves the scrapes of several Prometheus servers and dashboards for this long.
FRESH_S = 5.0
SCRAPE_WAIT_S = 2.0
# Past this age (readings failed, or one is still running) the figures are left out: a minute,
# four scrapes at Prometheus's usual 15 s.
STALE_S = 60.0


class StageFigures(NamedTuple):
    """One reading of the stage's shards and queue hold for /metrics: a few rows, milliseconds.
    The lots waiting are read apart (`watch`): counting them may take seconds."""

    tokens_enqueued: int
    oldest_batch_age_s: float
    held: HeldNow
    batches: Mapping[str, int]  # submitted shards by their batch's status, as last read
    paused: bool  # a row holds the stage paused: a batch it cannot read, or the quota


@dataclass
class _Reading(Generic[T]):
    """One statement's figures of a stage: read on a thread of its own when due, the last good
    ones kept with when they were read."""

    name: str  # for the thread and the log
    read: Callable[[], T]
    fresh_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    asked_at: float | None = None  # when the last reading began (on the collector's clock)
    taken_at: float | None = None  # when the last good one began
    value: T | None = None  # the last good one's
    thread: threading.Thread | None = None

    def start_if_due(self, now: float) -> threading.Thread | None:
        """Begin a reading unless one began within `fresh_s` or still runs; the thread a due
        reading runs on (None: none is due)."""
        with self.lock:
            if self.asked_at is not None and now - self.asked_at < self.fresh_s:
                return None
            if self.thread is None or not self.thread.is_alive():
                self.asked_at = now
                self.thread = threading.Thread(target=self._read, args=(now,), daemon=True, name=self.name)
                self.thread.start()
            return self.thread

    def latest(self, now: float, stale_s: float) -> tuple[T, float] | None:
        """The last good value and its age in seconds (None: none, or over `stale_s` old)."""
        with self.lock:
            taken_at, value = self.taken_at, self.value
        if taken_at is None or value is None:
            return None
        age_s = max(now - taken_at, 0.0)
        return None if age_s > stale_s else (value, age_s)

    def _read(self, began: float) -> None:
        try:
            value = self.read()
        except Exception as exc:  # the database, down or slow: the last good value ages meanwhile
            log.warning("%s was not read; the last reading stands until it is stale: %r", self.name, exc)
            return
        with self.lock:
            self.taken_at, self.value = began, value


@dataclass
class _Watched:
    """A stage's two readings, and the pause only this process knows of."""

    figures: _Reading[StageFigures]
    lots_waiting: _Reading[int]
    paused_here: Callable[[], bool]


class StageFiguresCollector(Collector):
    """`lotlens_stage_lots_waiting`, `lotlens_openai_enqueued_tokens`,
    `lotlens_openai_oldest_batch_age_seconds`, `lotlens_stage_queue_held_seconds`,
    `lotlens_stage_queue_refusals_in_a_row`, `lotlens_openai_batches` and `lotlens_stage_paused` of
    each stage this process runs (`watch`)."""

    def __init__(self, wait_s: float = SCRAPE_WAIT_S, stale_s: float = STALE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._wait_s, self._stale_s, self._clock = wait_s, stale_s, clock
        self._lock = threading.Lock()
        self._watched: dict[str, _Watched] = {}

    def watch(self, stage: str, figures: Callable[[], StageFigures], lots_waiting: Callable[[], int],
              fresh_s: float = FRESH_S, paused_here: Callable[[], bool] = lambda: False) -> None:
        """Export the stage's figures from now on, as `figures` and `lots_waiting` read them;
        `paused_here`: whether a pause this process alone knows of holds it (asked at each scrape)."""
        with self._lock:
            self._watched[stage] = _Watched(
                _Reading(f"the {stage} stage's figures", figures, fresh_s),
                _Reading(f"the {stage} stage's lots waiting", lots_waiting, fresh_s), paused_here)

    def forget(self, stage: str) -> None:
        """Export the stage's figures no longer (its loop has stopped)."""
        with self._lock:
            self._watched.pop(stage, None)

    def describe(self) -> Iterator[Metric]:
        """The families, without reading anything (the registry checks their names)."""
        return iter(_families())

    def collect(self) -> Iterator[Metric]:
        """Each watched stage's latest figures (none of a reading that failed or is stale)."""
        waiting, tokens, oldest, held, refusals, batches, paused = families = _families()
        with self._lock:
            watched = sorted(self._watched.items())
        self._read_due([r for _, w in watched for r in (w.figures, w.lots_waiting)])
        now = self._clock()
        for stage, parts in watched:
            # A refused key is this process's own: exported while the rows cannot be read too.
            here = parts.paused_here()
            if (counted := parts.lots_waiting.latest(now, self._stale_s)) is not None:
                waiting.add_metric([stage], counted[0])
            if (latest := parts.figures.latest(now, self._stale_s)) is None:
                if here:
                    paused.add_metric([stage], 1)
                continue
            figures, age_s = latest
            for status in sorted(RUNNING):  # each one, 0 when none: the series exist before a batch
                batches.add_metric([stage, status], figures.batches.get(status, 0))
            paused.add_metric([stage], 1 if figures.paused or here else 0)
            tokens.add_metric([stage], figures.tokens_enqueued)
            # Aged since the reading too: 0 (no batch) stays 0.
            oldest.add_metric([stage], figures.oldest_batch_age_s and figures.oldest_batch_age_s + age_s)
            # Counted down from the reading: a scrape between two readings shows what is left now.
            held.add_metric([stage], max(figures.held.left_s - age_s, 0.0))
            refusals.add_metric([stage], figures.held.refusals)
        return iter(families)

    def _read_due(self, readings: list[_Reading[Any]]) -> None:
        """Start the due readings, all at once, and wait for them `wait_s` at most in all."""
        threads = [t for t in (r.start_if_due(self._clock()) for r in readings) if t is not None]
        deadline = time.monotonic() + self._wait_s
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))


def _families() -> tuple[GaugeMetricFamily, ...]:
    """The families the collector exports, in `collect`'s order, empty."""
    return (
        GaugeMetricFamily("lotlens_stage_lots_waiting",
                          "Lots not in an OpenAI batch yet: waiting for a shard, or in one whose batch is "
                          "not created (building)", labels=["stage"]),
        GaugeMetricFamily("lotlens_openai_enqueued_tokens", "Estimated tokens held by OpenAI",
                          labels=["stage"]),
        GaugeMetricFamily("lotlens_openai_oldest_batch_age_seconds",
                          "Age of the oldest batch OpenAI still holds, from its creation there (0 when none)",
                          labels=["stage"]),
        GaugeMetricFamily("lotlens_stage_queue_held_seconds",
                          "Seconds the stage still holds new batches back after OpenAI's enqueued-token "
                          "queue for the model refused one (token_limit_exceeded); 0 when it does not",
                          labels=["stage"]),
        # What LotLensOpenAIQueueHeld reads: the held seconds drop to 0 for as long as each try
        # takes to build, upload and be refused (past 15 minutes on big files).
        GaugeMetricFamily("lotlens_stage_queue_refusals_in_a_row",
                          "Batches OpenAI's enqueued-token queue for the model refused in a row "
                          "(token_limit_exceeded); 0 once one created since is admitted", labels=["stage"]),
        GaugeMetricFamily("lotlens_openai_batches", "Batches being watched, by the OpenAI status last read",
                          labels=["stage", "status"]),
        GaugeMetricFamily("lotlens_stage_paused",
                          "1 while the stage submits nothing: a batch it made cannot be read (401/403/404), "
                          "OpenAI refuses batches for the quota, or refuses this process's key",
                          labels=["stage"]),
    )
