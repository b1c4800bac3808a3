"""The vision results, translations and failures of running lots are written in place (`running.py`): the read
models after each batch are exactly what the general upserts alone wrote, batch after batch of seeded
histories (topics interleaved, events delivered again, out of order, lots settled twice, jobs
cancelled), and a lot another replica stops meanwhile still gets its images counted, or is not failed."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, insert, text

from lotlens_common.envelope import Envelope
from lotlens_common.events import LotFailed, VisionCompleted
from lotlens_common.row_sets import json_rows
from lotlens_common.tables import lots
from lotlens_result_store import completion, projections, sql
from lotlens_result_store.changes import JobChanges
from lotlens_result_store.completion import lock_batch
from lotlens_result_store.handlers import apply_batch
from lotlens_result_store.running import Row, Written, update_running_lots
from tests.conftest import Infra, new_id, own_schema, rows_read
from tests.integration.lock_waits import wait_for_a_lock_wait
from tests.integration.result_store.histories import deliveries
from tests.integration.result_store.support import IMAGES_PER_LOT, job_script

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 2, tzinfo=UTC)
_TABLES = {"jobs": "job_id", "lots": "job_id, lot_id", "descriptions": "job_id, lot_id, language"}


def general_only(_conn: Connection, _operation: str, _statement: Any, rows: Sequence[Row]) -> Written:
    """No lot written in place: every row left to the general statement, as before the fast path."""
    return Written([], list(rows))


def read_models(conn: Connection, job_ids: list[str]) -> dict[str, list[Any]]:
    """Every row of the jobs' read models, whole (`updated_at` is the transaction's `now()`)."""
    return {table: [tuple(row) for row in conn.execute(text(
        f"SELECT * FROM {table} WHERE job_id = ANY(:ids) ORDER BY {key}"), {"ids": job_ids})]
        for table, key in _TABLES.items()}


def applied_both_ways(conn: Connection, batch: list[Envelope]) -> tuple[Any, Any]:
    """The batch's outcome and the read models after it, the general way (rolled back), then the code's.

    The outcome's jobs sorted: the order they are announced in is not part of it (each job's
    JobCompleted is its own), and the fast path meets a batch's jobs in another order."""
    job_ids = sorted({envelope.job_id for envelope in batch})
    lock_batch(conn, job_ids)
    savepoint = conn.begin_nested()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(projections, "update_running_lots", general_only)
        expected = (sorted(apply_batch(conn, batch, live=True)), read_models(conn, job_ids))
    savepoint.rollback()
    return expected, (sorted(apply_batch(conn, batch, live=True)), read_models(conn, job_ids))


@pytest.mark.parametrize("seed", range(40))
def test_each_batch_leaves_the_read_models_the_general_statements_leave(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    monkeypatch.setattr(completion, "utc_now", lambda: NOW)  # settling stamps the wall clock
    in_place: Counter[str] = Counter()

    def counted(conn: Connection, operation: str, statement: Any, rows: Sequence[Row]) -> Written:
        written = update_running_lots(conn, operation, statement, rows)
        in_place[operation] += sum(count for _, count, _, _ in written.per_job)
        return written

    monkeypatch.setattr(projections, "update_running_lots", counted)
    rng = random.Random(seed)
    for number, batch in enumerate(deliveries(rng, jobs=rng.randint(1, 3))):
        with engine.connect() as conn, conn.begin():
            expected, found = applied_both_ways(conn, batch)
            assert found == expected, f"batch {number} of seed {seed}"
    # Every seed's histories write lots in place: 34 of the 40 fail some (`fail_running_lots`), 37 describe
    # and 37 complete some.
    assert +in_place


def test_a_failure_in_place_that_carries_no_images_keeps_the_lots_own(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # The seeded histories' failures carry the images the lot has: a translation failure that
    # carries none (processed 0, no missing image) keeps those of the lot's vision result, as
    # FAIL_LOTS keeps them, and still counts them when the lot stops.
    monkeypatch.setattr(completion, "utc_now", lambda: NOW)
    in_place: Counter[str] = Counter()

    def counted(conn: Connection, operation: str, statement: Any, rows: Sequence[Row]) -> Written:
        written = update_running_lots(conn, operation, statement, rows)
        in_place[operation] += sum(count for _, count, _, _ in written.per_job)
        return written

    script = job_script(2)
    with engine.begin() as conn:
        lock_batch(conn, [script.job_id])
        apply_batch(conn, script.submissions + script.vision, live=True)
    monkeypatch.setattr(projections, "update_running_lots", counted)
    failed = [Envelope(client_id=script.client_id, event=LotFailed(
        job_id=script.job_id, lot_id=lot_id, stage="translation", total_lots=2,
        reason="the translation failed")) for lot_id in script.lot_ids]
    with engine.connect() as conn, conn.begin():
        expected, found = applied_both_ways(conn, failed)
        lots_read = conn.execute(text("SELECT status, processed_images, missing_images FROM lots "
                                      "WHERE job_id = :job"), {"job": script.job_id}).all()
        images = conn.execute(text("SELECT images_processed FROM jobs WHERE job_id = :job"),
                              {"job": script.job_id}).scalar_one()
    assert found == expected
    # Through the fast path, not left to FAIL_LOTS (which writes the same rows, only slower).
    assert in_place == {"fail_running_lots": 2}
    assert {(status, count, len(missing)) for status, count, missing in lots_read} == {
        ("failed", IMAGES_PER_LOT - 1, 1)}
    assert images == 2 * (IMAGES_PER_LOT - 1)


def test_a_lot_completed_by_another_replica_meanwhile_gets_its_images_counted(engine: Engine) -> None:
    # As tests/integration/result_store/test_replicas.py's first test, through the fast path: its
    # UPDATE finds the lot running, waits for the other replica's row lock, then re-reads the row,
    # now completed, and leaves the lot to the upsert, which counts the images it brings.
    job_id = new_id("job-")
    with engine.begin() as conn:
        conn.execute(insert(lots), [{"job_id": job_id, "lot_id": "lot-0", "status": "translating"}])
    completing = engine.connect()
    completing.execute(sql.COMPLETE_LOTS, {"rows": json_rows(
        [{"job_id": job_id, "lot_id": "lot-0", "processed_at": "2026-01-01T00:00:00Z", "usage": None}])})
    described = Envelope(client_id="client", event=VisionCompleted(
        job_id=job_id, lot_id="lot-0", english_html="<p>Car</p>", languages=("en",), total_lots=1,
        processed_images=IMAGES_PER_LOT, missing_images=()))
    changes = JobChanges()

    def describe() -> None:
        with engine.begin() as conn:
            projections.project_vision_completed(conn, [described], changes)

    describing = threading.Thread(target=describe)
    describing.start()
    wait_for_a_lock_wait(engine, "the vision statement")  # for the lot's row
    completing.commit()
    completing.close()
    describing.join(10)
    assert not describing.is_alive()
    change = changes.get(job_id)
    assert change is not None and change.images_processed == IMAGES_PER_LOT


def test_a_lot_completed_by_another_replica_meanwhile_is_not_failed(engine: Engine) -> None:
    # The failure's UPDATE finds the lot running, waits for the other replica's row lock, then
    # re-reads the row, now completed, and leaves the lot to FAIL_LOTS, which fails no settled lot.
    job_id = new_id("job-")
    with engine.begin() as conn:
        conn.execute(insert(lots), [{"job_id": job_id, "lot_id": "lot-0", "status": "translating",
                                     "processed_images": IMAGES_PER_LOT}])
    completing = engine.connect()
    completing.execute(sql.COMPLETE_LOTS, {"rows": json_rows(
        [{"job_id": job_id, "lot_id": "lot-0", "processed_at": "2026-01-01T00:00:00Z", "usage": None}])})
    failed = Envelope(client_id="client", event=LotFailed(
        job_id=job_id, lot_id="lot-0", stage="translation", total_lots=1, reason="the translation failed",
        processed_images=IMAGES_PER_LOT))
    changes = JobChanges()

    def fail() -> None:
        with engine.begin() as conn:
            projections.project_lot_failed(conn, [failed], changes)

    failing = threading.Thread(target=fail)
    failing.start()
    wait_for_a_lock_wait(engine, "the failure's statement")  # for the lot's row
    completing.commit()
    completing.close()
    failing.join(10)
    assert not failing.is_alive()
    change = changes.get(job_id)
    assert change is not None and (change.failed_lots, change.images_processed) == (0, 0)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status, error_message FROM lots WHERE job_id = :job"),
                            {"job": job_id}).one() == ("completed", None)




@pytest.mark.parametrize("statement", ["DESCRIBE_RUNNING_LOTS", "COMPLETE_RUNNING_LOTS", "FAIL_RUNNING_LOTS"])
def test_a_batch_written_in_place_reads_its_own_lots_only(infra: Infra, engine: Engine,
                                                          statement: str) -> None:
    # The planner cannot count a JSON document's rows (it takes 100): the UPDATE must still find
    # each lot by its key, not read the table, which holds every job's lots (planned from the
    # statistics of finished jobs, as in production).
    job_id, lot_count = new_id("job-"), 1000
    rows: list[Row] = [{"job_id": job_id, "lot_id": f"lot-{i}", "processed_images": IMAGES_PER_LOT,
                        "missing_images": [], "processed_at": "2026-01-01T00:00:00Z", "usage": None,
                        "reason": "the translation failed", "stage": "translation"}
                       for i in range(lot_count)]
    with own_schema(infra, engine) as own, own.begin() as conn:
        conn.execute(text("INSERT INTO lots (job_id, lot_id, seq, status) SELECT 'finished-' || n / 5000, "
                          "'lot-' || n, n, 'completed' FROM generate_series(1, 20000) n"))
        conn.execute(text("INSERT INTO lots (job_id, lot_id, seq) SELECT :job, 'lot-' || n, n "
                          "FROM generate_series(0, :count - 1) n"), {"job": job_id, "count": lot_count})
        conn.execute(text("ANALYZE lots"))
        read_before = rows_read(conn, "lots")
        written = update_running_lots(conn, "test", getattr(sql, statement), rows)
        read = rows_read(conn, "lots") - read_before
    assert (written.per_job[0][:2], written.rest) == ((job_id, lot_count), [])
    assert read == lot_count
