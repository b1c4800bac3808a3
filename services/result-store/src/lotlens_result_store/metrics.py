"""Prometheus metrics of the result-store, and the ways it writes (each counted): a statement, or
a COPY of rows that are usually new."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter
from sqlalchemy import Connection, CursorResult, Executable

from lotlens_common.row_sets import append_rows

# The 1.x name, exported by this service alone: it sees every job arrive and finish.
# pending: a job's JobSubmitted projected; completed | failed | cancelled: JobCompleted published.
BATCH_JOBS = Counter("batch_jobs_total", "Batch jobs by the status they reached", ["status"])
DATABASE_OPERATIONS = Counter("lotlens_result_store_db_statements_total",
                              "Statements run against PostgreSQL", ["operation"])
EVENTS_PROJECTED = Counter("lotlens_events_projected_total", "Events applied to the read models",
                           ["type"])


Params = Mapping[str, Any] | list[dict[str, Any]] | None


def execute(conn: Connection, operation: str, statement: Executable,
            params: Params = None) -> CursorResult[*tuple[Any, ...]]:
    """Run one statement and count it under `operation`."""
    DATABASE_OPERATIONS.labels(operation=operation).inc()
    return conn.execute(statement, params)


def append(conn: Connection, operation: str, statement: str, rows: bytes) -> bool:
    """COPY rows (`append_rows`) and count it under `operation`; False when one was already there."""
    DATABASE_OPERATIONS.labels(operation=operation).inc()
    return append_rows(conn, statement, rows)
