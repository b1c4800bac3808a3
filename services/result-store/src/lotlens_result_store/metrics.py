"""Prometheus metrics of the result-store, and the one way it runs a statement (counted)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter
from sqlalchemy import Connection, CursorResult, Executable

BATCH_JOBS = Counter("batch_jobs_total", "Jobs that reached a terminal status (JobCompleted published)",
                     ["status"])
DATABASE_OPERATIONS = Counter("database_operations_total", "Statements run against PostgreSQL",
                              ["operation"])
EVENTS_PROJECTED = Counter("lotlens_events_projected_total", "Events applied to the read models",
                           ["type"])


Params = Mapping[str, Any] | list[dict[str, Any]] | None


def execute(conn: Connection, operation: str, statement: Executable,
            params: Params = None) -> CursorResult[*tuple[Any, ...]]:
    """Run one statement and count it under `operation`."""
    DATABASE_OPERATIONS.labels(operation=operation).inc()
    return conn.execute(statement, params)
