"""Hot statements at volume, held to PostgreSQL's planner: their cost follows the rows they
return, not the size of the tables (found by EXPLAIN at 3 million lots and 20,000 jobs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, text

from lotlens_gateway.outbox import cancelled_unprojected
from tests.conftest import Infra, own_schema

pytestmark = pytest.mark.integration


def plan_nodes(conn: Connection, run: Callable[[], object]) -> list[tuple[str, str | None]]:
    """(node type, relation) of the plans of every statement `run` executes on `conn`."""
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        statements.append((statement, parameters))

    event.listen(conn, "before_cursor_execute", capture)
    try:
        run()
    finally:
        event.remove(conn, "before_cursor_execute", capture)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    nodes: list[tuple[str, str | None]] = []
    for statement, parameters in statements:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
        nodes += walk(cursor.fetchone()[0][0]["Plan"])
    return nodes


def walk(plan: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    yield plan["Node Type"], plan.get("Relation Name")
    for child in plan.get("Plans", []):
        yield from walk(child)


def test_the_jobs_list_finds_a_clients_unprojected_cancels_without_reading_every_job(
        infra: Infra, engine: Engine) -> None:
    # Per GET /batch-jobs: the old statement scanned the whole jobs table for unfinished ones.
    with own_schema(infra, engine) as own, own.begin() as conn:
        conn.execute(text("INSERT INTO jobs (job_id, client_id, status, total_lots, created_at) "
                          "SELECT 'job-' || n, 'client-' || (n % 50), 'completed', 10, now() "
                          "FROM generate_series(1, 20000) n"))
        conn.execute(text("INSERT INTO outbox (topic, job_id, client_id, event_type, payload, published_at) "
                          "SELECT 't', 'job-' || n, 'client-' || (n % 50), CASE WHEN n % 1000 = 0 "
                          "THEN 'JobCancelled' ELSE 'LotSubmitted' END, '{}', now() "
                          "FROM generate_series(1, 60000) n"))
        conn.execute(text("ANALYZE jobs"))
        conn.execute(text("ANALYZE outbox"))
        nodes = plan_nodes(conn, lambda: cancelled_unprojected(conn, "client-0"))
    assert ("Seq Scan", "jobs") not in nodes, nodes
    assert ("Seq Scan", "outbox") not in nodes, nodes
