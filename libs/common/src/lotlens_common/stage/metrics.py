"""Prometheus metrics of the batch stages (labelled by stage, so both can share a process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from lotlens_common.model.errors import error_kind

BATCHES_CREATED = Counter("lotlens_openai_batches_created_total", "OpenAI batches created", ["stage"])
BATCHES_BY_STATUS = Gauge("lotlens_openai_batches", "Batches being watched, by OpenAI status",
                          ["stage", "status"])
OLDEST_BATCH_AGE = Gauge("lotlens_openai_oldest_batch_age_seconds",
                         "Age of the oldest batch OpenAI still holds (0 when none)", ["stage"])
LOTS_WAITING = Gauge("lotlens_stage_lots_waiting", "Lots waiting to be batched", ["stage"])
TOKENS_ENQUEUED = Gauge("lotlens_openai_enqueued_tokens", "Estimated tokens held by OpenAI", ["stage"])
OPENAI_ERRORS = Counter("lotlens_openai_errors_total", "OpenAI API errors of the batch stages",
                        ["stage", "operation", "kind"])
LOT_RESULTS = Counter("lotlens_stage_lot_results_total", "Lots settled by the stage", ["stage", "outcome"])
BATCHES_RECONCILED = Counter("lotlens_openai_batches_reconciled_total",
                             "Batches with this stage's metadata that no shard had on record (orphans)",
                             ["stage", "action"])
PAUSED = Gauge("lotlens_stage_paused",
               "1 while the stage submits nothing: a batch it made cannot be read (401/403/404)",
               ["stage"])


def openai_error(stage: str, operation: str, exc: BaseException) -> None:
    """Count one failed OpenAI call of `stage` by the kind of failure."""
    OPENAI_ERRORS.labels(stage=stage, operation=operation, kind=error_kind(exc)).inc()
