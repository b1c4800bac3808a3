"""Prometheus metrics of the batch stages (labelled by stage, so both can share a process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

BATCHES_CREATED = Counter("lotlens_batches_created_total", "OpenAI batches created", ["stage"])
BATCHES_BY_STATUS = Gauge("lotlens_batches", "Batches being watched, by OpenAI status",
                          ["stage", "status"])
LOTS_WAITING = Gauge("lotlens_lots_waiting", "Lots waiting to be batched", ["stage"])
TOKENS_ENQUEUED = Gauge("lotlens_tokens_enqueued", "Estimated tokens held by OpenAI", ["stage"])
OPENAI_ERRORS = Counter("openai_api_errors_total", "OpenAI API errors", ["api", "kind"])
LOT_RESULTS = Counter("lotlens_lot_results_total", "Lots settled by the stage", ["stage", "outcome"])
BATCHES_RECONCILED = Counter("lotlens_batches_reconciled_total",
                             "Batches with this stage's metadata that no shard had on record",
                             ["stage", "action"])
PAUSED = Gauge("lotlens_stage_paused",
               "1 while the stage submits nothing: a batch it made cannot be read (401/403/404)",
               ["stage"])
