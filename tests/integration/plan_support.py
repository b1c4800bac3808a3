"""EXPLAIN of the statements code runs, for tests that hold hot statements to PostgreSQL's planner
(no tests here; test_query_plans.py and the gateway's tests import from it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, event

Node = tuple[str, str | None, str | None]  # node type, relation, index


def plan_nodes(conn: Connection, run: Callable[[], object]) -> list[tuple[str, str | None]]:
    """(node type, relation) of the plans of every statement `run` executes on `conn`."""
    return [(node, relation) for plan in plans(conn, executed(conn, run)) for node, relation, _ in plan]


@contextmanager
def on_each_statement(source: Engine | Connection | type[Engine],
                      act: Callable[[str, Any], None]) -> Iterator[None]:
    """Calls `act(statement, parameters)` right before each statement `source`'s connections run
    while inside (`Engine` itself: every engine's, a gateway's serving threads included)."""
    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        act(statement, parameters)

    event.listen(source, "before_cursor_execute", before)
    try:
        yield
    finally:
        event.remove(source, "before_cursor_execute", before)


def executed(source: Engine | Connection | type[Engine], run: Callable[[], object]) -> list[tuple[str, Any]]:
    """The statements (and their parameters) `run` executes on `source`'s connections."""
    statements: list[tuple[str, Any]] = []
    with on_each_statement(source, lambda statement, parameters: statements.append((statement, parameters))):
        run()
    return statements


def plans(conn: Connection, statements: list[tuple[str, Any]]) -> list[list[Node]]:
    """Each statement's plan as its nodes: (node type, relation, index)."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    found = []
    for statement, parameters in statements:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
        row = cursor.fetchone()
        assert row is not None, "EXPLAIN returns one row"
        found.append(list(walk(row[0][0]["Plan"])))
    return found


def walk(plan: dict[str, Any]) -> Iterator[Node]:
    """The plan's nodes, depth first."""
    yield plan["Node Type"], plan.get("Relation Name"), plan.get("Index Name")
    for child in plan.get("Plans", []):
        yield from walk(child)
