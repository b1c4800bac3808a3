"""Usage and cost in the read models: each lot's per stage, each finished job's summed (and counted).

A lot's usage arrives on `VisionCompleted` and `TranslationCompleted` and is stored with the lot's
result by the same statement (`sql.DESCRIBE_RUNNING_LOTS` or `sql.UPSERT_DESCRIBED_LOTS`,
`sql.COMPLETE_RUNNING_LOTS` or `sql.COMPLETE_LOTS`); a job's is summed from
its lots when `JobCompleted` is published, stored in `jobs.usage` and carried by the event.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter
from sqlalchemy import Connection

from lotlens_common.events import TranslationCompleted
from lotlens_common.model.usage import JobUsage, Usage
from lotlens_common.row_sets import json_rows
from lotlens_result_store import sql
from lotlens_result_store.metrics import execute

TOKENS = Counter("lotlens_model_tokens_total", "Tokens of finished jobs' model answers, by model and kind",
                 ["model", "kind"])
COST = Counter("lotlens_estimated_cost_usd_total", "Estimated cost of finished jobs' model answers (USD)",
               ["model"])
_KINDS = ("input", "cached_input", "output", "reasoning")


def stored_usage(usage: Usage | None) -> dict[str, object] | None:
    """A lot's usage as `json_rows` writes it: its fields, plain values orjson writes as pydantic
    would. Handed the model, `json_rows` asks pydantic for its JSON (1.4 us), twice a lot: 0.15
    CPU-s of a 50,000-lot job."""
    return None if usage is None else vars(usage)


def record_settled_usage(conn: Connection, events: Sequence[TranslationCompleted],
                         completed: set[tuple[str, str]]) -> None:
    """Store the translation usage of lots that were settled before their answer came back."""
    late = [event for event in events
            if event.usage is not None and (event.job_id, event.lot_id) not in completed]
    if late:
        execute(conn, "settled_lot_usage", sql.SETTLED_LOT_USAGE, {"rows": json_rows(
            {"job_id": e.job_id, "lot_id": e.lot_id, "usage": stored_usage(e.usage)} for e in late)})


def job_usage(conn: Connection, job_ids: Sequence[str]) -> dict[str, JobUsage]:
    """Each job's usage summed from its lots (jobs without any are left out)."""
    per_job: dict[str, list[Usage]] = {}
    rows = execute(conn, "job_usage", sql.JOB_USAGE, {"job_ids": list(job_ids)})
    for job_id, model, fresh, cached, output, reasoning, cost, unpriced in rows:
        per_job.setdefault(job_id, []).append(Usage(
            input_tokens=fresh or 0, cached_input_tokens=cached or 0, output_tokens=output or 0,
            reasoning_tokens=reasoning or 0, estimated_cost_usd=None if unpriced else cost, model=model))
    return {job_id: JobUsage.of(usages) for job_id, usages in per_job.items()}


def count_usage(usage: JobUsage) -> None:
    """Add a finished job's tokens and cost to the metrics."""
    for model, part in usage.by_model.items():
        for kind in _KINDS:
            TOKENS.labels(model=model, kind=kind).inc(getattr(part, f"{kind}_tokens"))
        if part.estimated_cost_usd is not None:
            COST.labels(model=model).inc(part.estimated_cost_usd)
