"""`apply_batch` runs the very statements, with the very parameters (COPYed rows included), that
the Python loops it replaced ran (tests/result_store_reference.py), batch after batch of seeded
histories of a few jobs: topics interleaved, events delivered again, taken out of order, and lots
settled twice. Each batch runs the reference first in a savepoint rolled back, then the code."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine

from lotlens_common import row_sets
from lotlens_common.envelope import Envelope
from lotlens_result_store import changes, completion, projections
from lotlens_result_store.completion import lock_batch
from lotlens_result_store.handlers import apply_batch
from tests import result_store_reference as reference
from tests.integration.plan_support import on_each_statement
from tests.integration.result_store.histories import deliveries

Statement = tuple[str, Any]
NOW = datetime(2026, 3, 2, tzinfo=UTC)
Record = Callable[[Connection, Callable[[], object]], list[Statement]]


@pytest.fixture()
def recorded(monkeypatch: pytest.MonkeyPatch) -> Record:
    """The statements and COPYs `run` sends on `conn` (savepoint names left out: they count up)."""
    copies: list[Statement] = []
    copy_in = row_sets.copy_in

    def recording_copy_in(conn: Connection, statement: str, rows: bytes | list[bytes]) -> None:
        copies.append((statement, rows if isinstance(rows, bytes) else b"".join(rows)))
        copy_in(conn, statement, rows)

    monkeypatch.setattr(row_sets, "copy_in", recording_copy_in)
    monkeypatch.setattr(completion, "utc_now", lambda: NOW)  # settling stamps the wall clock

    def record(conn: Connection, run: Callable[[], object]) -> list[Statement]:
        statements: list[Statement] = []
        copies.clear()
        with on_each_statement(conn, lambda statement, parameters: statements.append(
                (re.sub(r"sa_savepoint_\d+", "sa_savepoint", statement), parameters))):
            statements.append(("result", sorted(run())))  # type: ignore[call-overload]
        return statements + copies

    return record


def with_reference_walks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The projections' helpers swapped for the loops they replaced."""
    for name in ("latest_envelopes", "latest_events", "events_of"):
        monkeypatch.setattr(projections, name, getattr(reference, name))
    monkeypatch.setattr(changes.JobChanges, "touch_all", reference.touch_all)


@pytest.mark.parametrize("seed", range(40))
def test_each_batch_runs_the_statements_the_loops_ran(engine: Engine, recorded: Record, seed: int) -> None:
    rng = random.Random(seed)
    batches = 0
    for batch in deliveries(rng, jobs=rng.randint(1, 3)):
        expected, found = applied_both_ways(engine, recorded, batch)
        assert found == expected, f"batch {batches} of seed {seed}"
        batches += 1
    assert batches


def applied_both_ways(engine: Engine, recorded: Record,
                      batch: list[Envelope]) -> tuple[list[Statement], list[Statement]]:
    """What the reference sends for the batch (rolled back), then what the code sends (committed)."""
    with engine.connect() as conn, conn.begin():
        lock_batch(conn, [envelope.job_id for envelope in batch])
        savepoint = conn.begin_nested()
        with pytest.MonkeyPatch.context() as patch:
            with_reference_walks(patch)
            expected = recorded(conn, lambda: reference.apply_batch(conn, batch, live=True))
        savepoint.rollback()
        return expected, recorded(conn, lambda: apply_batch(conn, batch, live=True))
