"""What a set of jobs looks like in the read models and through the gateway's reads, for comparing
two projections of one history (a live order and a rebuild's)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from lotlens_common.tables import descriptions, jobs, lots, openai_batches
from lotlens_gateway.job_store import JobStore
from lotlens_gateway.overlay import lots_page
from lotlens_gateway.views import status_body

# When the API views are read: `progress.estimated_completion` depends on it.
NOW = datetime(2026, 3, 2, tzinfo=UTC)
# Bookkeeping (when a row was last written), the one thing docs/EVENT_LOG.md lets a replay change.
_BOOKKEEPING = "updated_at"


def read_models(engine: Engine, job_ids: Collection[str]) -> dict[str, Any]:
    """The jobs' rows in `jobs`, `lots`, `descriptions` and `openai_batches`."""
    with engine.connect() as conn:
        def rows(table: Any, *key: str) -> dict[tuple[Any, ...], dict[str, Any]]:
            found = conn.execute(select(table).where(table.c.job_id.in_(sorted(job_ids)))).mappings()
            return {tuple(row[k] for k in key): {c: v for c, v in row.items() if c != _BOOKKEEPING}
                    for row in found}
        return {"jobs": rows(jobs, "job_id"), "lots": rows(lots, "job_id", "lot_id"),
                "descriptions": rows(descriptions, "job_id", "lot_id", "language"),
                "openai_batches": rows(openai_batches, "batch_id")}


def statuses(engine: Engine, job_ids: Collection[str]) -> dict[tuple[str, ...], str]:
    """Each job's status (key: its id) and each lot's (key: job id, lot id)."""
    with engine.connect() as conn:
        job_rows = conn.execute(select(jobs.c.job_id, jobs.c.status)
                                .where(jobs.c.job_id.in_(sorted(job_ids))))
        lot_rows = conn.execute(select(lots.c.job_id, lots.c.lot_id, lots.c.status)
                                .where(lots.c.job_id.in_(sorted(job_ids))))
        return {**{(job_id,): status for job_id, status in job_rows},
                **{(job_id, lot_id): status for job_id, lot_id, status in lot_rows}}


def api_views(store: JobStore, clients: dict[str, str]) -> dict[str, Any]:
    """Per job (id → client id): what `GET /batch-status` and the lots listing answer."""
    views: dict[str, Any] = {}
    for job_id, client_id in sorted(clients.items()):
        job, batches = store.status_for_client(job_id, client_id)
        status = status_body(job, batches, NOW)
        status.pop(_BOOKKEEPING)
        with store.reads.connect() as conn:
            listed = lots_page(conn, job, None, 100, 0, 10**7)
        views[job_id] = {"status": status, "lots": listed}
    return views
