"""Prometheus metrics of the batch stages (labelled by stage, so both can share a process)."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter

from lotlens_common.model.errors import ERROR_KINDS, ModelError, error_kind
from lotlens_common.stage.figures import StageFiguresCollector

BATCHES_CREATED = Counter("lotlens_openai_batches_created_total", "OpenAI batches created", ["stage"])
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
# The stage's own figures (lots waiting, tokens enqueued, oldest batch, queue hold, batches by
# status, pauses), read from its store at scrape time for each stage whose loop runs here
# (`runner.run_stage_loop`).
FIGURES = StageFiguresCollector()
REGISTRY.register(FIGURES)

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
