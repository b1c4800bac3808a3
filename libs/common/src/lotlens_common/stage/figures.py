"""The stage's figures on /metrics, read from its store when a scrape asks for them.

The lots waiting, the tokens enqueued, the oldest batch's age, the batches by status, the queue
hold and the pauses on the shards' rows are the stage's, alike for every replica. Set by each
replica's rounds, they were what that replica last read: one busy in a long round (collecting or
building a big file, minutes, its heartbeat beating) went on exporting the refusals in a row and
the lots waiting it had read, after another replica's batch had been admitted, and
LotLensOpenAIQueueHeld (`max` over the replicas) paged on a hold that had ended; so did
LotLensOpenAIAuthenticationErrors on a quota pause another replica's batch had ended. Now a scrape
that finds the last reading over `fresh_s` old starts one, on a thread of its own, and waits for it
at most `wait_s`: a database that does not answer never holds /metrics (and the round-failure
counters LotLensStageRoundsFailing reads) past Prometheus's timeout. The last good reading stands,
aged, until it is `stale_s` old, through slow or failed readings: left out at the first failure, a
series lost its sample for a scrape and an alert's `for:` (30 minutes for LotLensOpenAIQueueHeld)
began again. Past `stale_s` it is not exported at all: no figure rather than a stale one.

One pause is no row's: OpenAI refusing this process's key (`key.py`). The key is each process's
own, and only its own calls show it accepted again, so `paused_here` asks its memory at each scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lotlens_common.stage.core.lifecycle import RUNNING
from lotlens_common.stage.core.queue_hold import HeldNow

log = logging.getLogger(__name__)

# One reading serves the scrapes of several Prometheus servers and dashboards for this long.
FRESH_S = 5.0
SCRAPE_WAIT_S = 2.0
# Past this age (readings failed, or one is still running) the figures are left out: a minute,
# four scrapes at Prometheus's usual 15 s.
STALE_S = 60.0


class StageFigures(NamedTuple):
    """One reading of the stage's store for /metrics."""

    lots_waiting: int
    tokens_enqueued: int
    oldest_batch_age_s: float
    held: HeldNow
    batches: Mapping[str, int]  # submitted shards by their batch's status, as last read
    paused: bool  # a row holds the stage paused: a batch it cannot read, or the quota


@dataclass
class _Reading:
    read: Callable[[], StageFigures]
    fresh_s: float
    paused_here: Callable[[], bool]
    asked_at: float | None = None  # when the last reading began (on the collector's clock)
    taken_at: float | None = None  # when the last good one began
    figures: StageFigures | None = None  # the last good one's
    thread: threading.Thread | None = None


class StageFiguresCollector(Collector):
    """`lotlens_stage_lots_waiting`, `lotlens_openai_enqueued_tokens`,
    `lotlens_openai_oldest_batch_age_seconds`, `lotlens_stage_queue_held_seconds`,
    `lotlens_stage_queue_refusals_in_a_row`, `lotlens_openai_batches` and `lotlens_stage_paused` of
    each stage this process runs (`watch`)."""

    def __init__(self, wait_s: float = SCRAPE_WAIT_S, stale_s: float = STALE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._wait_s, self._stale_s, self._clock = wait_s, stale_s, clock
        self._lock = threading.Lock()
        self._readings: dict[str, _Reading] = {}

    def watch(self, stage: str, read: Callable[[], StageFigures], fresh_s: float = FRESH_S,
              paused_here: Callable[[], bool] = lambda: False) -> None:
        """Export the stage's figures from now on, as `read` finds them; `paused_here`: whether a
        pause this process alone knows of holds it (asked at each scrape)."""
        with self._lock:
            self._readings[stage] = _Reading(read, fresh_s, paused_here)

    def forget(self, stage: str) -> None:
        """Export the stage's figures no longer (its loop has stopped)."""
        with self._lock:
            self._readings.pop(stage, None)

    def describe(self) -> Iterator[Metric]:
        """The families, without reading anything (the registry checks their names)."""
        return iter(_families())

    def collect(self) -> Iterator[Metric]:
        """Each watched stage's latest figures (none for a stage whose reading failed or is stale)."""
        waiting, tokens, oldest, held, refusals, batches, paused = families = _families()
        with self._lock:
            watched = sorted(self._readings.items())
        for stage, reading in watched:
            latest = self.latest(stage)
            if latest is None:
                continue
            figures, age_s = latest
            for status in sorted(RUNNING):  # each one, 0 when none: the series exist before a batch
                batches.add_metric([stage, status], figures.batches.get(status, 0))
            paused.add_metric([stage], 1 if figures.paused or reading.paused_here() else 0)
            waiting.add_metric([stage], figures.lots_waiting)
            tokens.add_metric([stage], figures.tokens_enqueued)
            # Aged since the reading too: 0 (no batch) stays 0.
            oldest.add_metric([stage], figures.oldest_batch_age_s and figures.oldest_batch_age_s + age_s)
            # Counted down from the reading: a scrape between two readings shows what is left now.
            held.add_metric([stage], max(figures.held.left_s - age_s, 0.0))
            refusals.add_metric([stage], figures.held.refusals)
        return iter(families)

    def latest(self, stage: str) -> tuple[StageFigures, float] | None:
        """The stage's last good reading and its age in seconds, reading again first if it is due;
        None when there is none, it is over `stale_s` old, or the stage is not watched."""
        with self._lock:
            reading = self._readings.get(stage)
            if reading is None:
                return None
            due = reading.asked_at is None or self._clock() - reading.asked_at >= reading.fresh_s
            if due and (reading.thread is None or not reading.thread.is_alive()):
                reading.asked_at = self._clock()
                reading.thread = threading.Thread(target=self._read, args=(stage, reading), daemon=True,
                                                  name=f"figures-{stage}")
                reading.thread.start()
            thread = reading.thread
        if due and thread is not None:
            thread.join(self._wait_s)
        with self._lock:
            taken_at, figures = reading.taken_at, reading.figures
        if taken_at is None or figures is None:
            return None
        age_s = max(self._clock() - taken_at, 0.0)
        return None if age_s > self._stale_s else (figures, age_s)

    def _read(self, stage: str, reading: _Reading) -> None:
        began = self._clock()
        try:
            figures = reading.read()
        except Exception as exc:  # the database, down or slow: the last good figures age meanwhile
            log.warning("the %s stage's figures were not read; the last ones stand until %.0f s old: %r",
                        stage, self._stale_s, exc)
            return
        with self._lock:
            reading.taken_at, reading.figures = began, figures


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
