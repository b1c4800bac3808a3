"""Prometheus metrics of the batch stages (labelled by stage, so both can share a process)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge

from lotlens_common.model.errors import ERROR_KINDS, ModelError, error_kind

BATCHES_CREATED = Counter("lotlens_openai_batches_created_total", "OpenAI batches created", ["stage"])
BATCHES_BY_STATUS = Gauge("lotlens_openai_batches", "Batches being watched, by OpenAI status",
                          ["stage", "status"])
OLDEST_BATCH_AGE = Gauge("lotlens_openai_oldest_batch_age_seconds",
                         "Age of the oldest batch OpenAI still holds, from its creation there (0 when none)",
                         ["stage"])
LOTS_WAITING = Gauge("lotlens_stage_lots_waiting",
                     "Lots not in an OpenAI batch yet: waiting for a shard, or in one whose batch is "
                     "not created (building)", ["stage"])
TOKENS_ENQUEUED = Gauge("lotlens_openai_enqueued_tokens", "Estimated tokens held by OpenAI", ["stage"])
OPENAI_ERRORS = Counter("lotlens_openai_errors_total", "OpenAI API errors of the batch stages",
                        ["stage", "operation", "kind"])
# Calls refused or timed out before any answer have none: with errors and no answer below 500,
# OpenAI cannot be reached (LotLensOpenAIUnreachable).
ANSWERS = Counter("lotlens_openai_answers_total", "HTTP answers OpenAI gave the stage's calls (each "
                  "try), by status class", ["stage", "status_class"])
ROUND_FAILURES = Counter("lotlens_stage_round_failures_total",
                         "Stage steps that failed for another reason than OpenAI (database, Kafka, a "
                         "defect); the step runs again", ["stage", "step"])
LOT_RESULTS = Counter("lotlens_stage_lot_results_total", "Lots settled by the stage", ["stage", "outcome"])
BATCHES_RECONCILED = Counter("lotlens_openai_batches_reconciled_total",
                             "Batches with this stage's metadata that no shard had on record (orphans)",
                             ["stage", "action"])
QUEUE_FULL = Counter("lotlens_openai_queue_full_total",
                     "Batches OpenAI failed as the model's enqueued-token queue was full "
                     "(token_limit_exceeded); new batches are held back a while after each", ["stage"])
OUTPUT_AWAITED = Counter("lotlens_openai_output_awaited_total",
                         "Rounds a finished batch was left uncollected: its counts say lines were "
                         "answered but its output file is not shown or not readable yet", ["stage"])
PAUSED = Gauge("lotlens_stage_paused",
               "1 while the stage submits nothing: a batch it made cannot be read (401/403/404), "
               "OpenAI refuses the key or refuses batches for the quota",
               ["stage"])
# Read by the submit step every round (`quota.may_build`), from the stage's one row, alike by every
# replica; counted down at each scrape (`queue_hold_read`).
QUEUE_HELD = Gauge("lotlens_stage_queue_held_seconds",
                   "Seconds the stage still holds new batches back after OpenAI's enqueued-token queue for "
                   "the model refused one (token_limit_exceeded); 0 when it does not", ["stage"])
# Kept between holds (0 once a batch is admitted): what the alert reads, as the held seconds drop
# to 0 for as long as each try takes to build, upload and be refused (past 15 minutes on big files).
QUEUE_REFUSALS = Gauge("lotlens_stage_queue_refusals_in_a_row",
                       "Batches OpenAI's enqueued-token queue for the model refused in a row "
                       "(token_limit_exceeded); 0 once one created since is admitted", ["stage"])

# Per stage: when the hold last read ends, on this process's monotonic clock.
_HOLD_ENDS: dict[str, float] = {}


def queue_hold_read(stage: str, left_s: float, refusals: int) -> None:
    """Export the stage's hold as just read. The seconds left count down at each scrape: set as a
    figure, they stood still from one read to the next, and a round that collected or built for
    minutes (heartbeat beating, /livez green) showed a hold that had run out as minutes to go."""
    _HOLD_ENDS[stage] = time.monotonic() + left_s
    QUEUE_HELD.labels(stage=stage).set_function(lambda: max(_HOLD_ENDS[stage] - time.monotonic(), 0.0))
    QUEUE_REFUSALS.labels(stage=stage).set(refusals)


STATUS_CLASSES = ("2xx", "4xx", "5xx")
# What a stage does when it fails: `loop` and `housekeeping` are whole rounds.
# `cancel`: dropping a cancelled job's waiting lots (its claim, its LotFailed events).
OPERATIONS = ("batches", "files", "loop", "housekeeping", "cancel")
RECONCILE_ACTIONS = ("adopted", "cancelled")


def start(stage: str) -> None:
    """Export the stage's counters at 0: alerts take `increase()` of them, and a series first
    seen at 1 has none, so the first orphaned batch or refused key of a pod went unalerted."""
    BATCHES_CREATED.labels(stage=stage)
    OUTPUT_AWAITED.labels(stage=stage)
    QUEUE_FULL.labels(stage=stage)
    QUEUE_HELD.labels(stage=stage)
    QUEUE_REFUSALS.labels(stage=stage)
    for status_class in STATUS_CLASSES:
        ANSWERS.labels(stage=stage, status_class=status_class)
    for operation in OPERATIONS:
        ROUND_FAILURES.labels(stage=stage, step=operation)
        for kind in ERROR_KINDS:
            OPENAI_ERRORS.labels(stage=stage, operation=operation, kind=kind)
    for action in RECONCILE_ACTIONS:
        BATCHES_RECONCILED.labels(stage=stage, action=action)


def answered(stage: str, status: int) -> None:
    """Count an HTTP answer OpenAI gave one of the stage's calls."""
    ANSWERS.labels(stage=stage, status_class=f"{status // 100}xx").inc()


def openai_error(stage: str, operation: str, exc: BaseException) -> None:
    """Count a failed step of `stage`: an OpenAI error by its kind, anything else (PostgreSQL down,
    a publish refused, a defect) as the stage's own, so a database outage never reads as OpenAI's."""
    if isinstance(exc, ModelError):
        OPENAI_ERRORS.labels(stage=stage, operation=operation, kind=error_kind(exc)).inc()
    else:
        ROUND_FAILURES.labels(stage=stage, step=operation).inc()
