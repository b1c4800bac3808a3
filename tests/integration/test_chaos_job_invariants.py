"""The chaos invariants on a job's read models, fed crafted outcomes in PostgreSQL: a job the
workload cancelled is held to what it ended as (a late cancel that let it complete owes every lot
and language), and a healthy outcome passes."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, insert

from chaos.invariants import check_jobs
from chaos.schedule import JobPlan
from chaos.workload import Submitted
from lotlens_common.tables import descriptions, jobs, lots
from tests.conftest import new_id

pytestmark = pytest.mark.integration

PLAN = JobPlan(lots=2, languages=("en", "de"), webhook="ok", cancel=True)


def _job(engine: Engine, status: str, lot_statuses: list[str], described: int) -> tuple[str, list[str]]:
    """A job row, its lots (the first `described` with every language's text) and its count."""
    job_id, lot_ids = new_id("job-"), [new_id("lot-") for _ in lot_statuses]
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(job_id=job_id, status=status, total_lots=len(lot_ids),
                                         processed_lots=lot_statuses.count("completed")))
        conn.execute(insert(lots), [{"job_id": job_id, "lot_id": lot, "status": lot_status}
                                    for lot, lot_status in zip(lot_ids, lot_statuses, strict=True)])
        texts = [{"job_id": job_id, "lot_id": lot, "language": code, "damages": "<p>Dent.</p>"}
                 for lot in lot_ids[:described] for code in PLAN.languages]
        if texts:  # an empty list would insert one row of defaults
            conn.execute(insert(descriptions), texts)
    return job_id, lot_ids


def _checked(engine: Engine, job_id: str, lot_ids: list[str], status: str) -> list[str]:
    out = Submitted(accepted={job_id: (PLAN, lot_ids)}, cancelled={job_id})
    return check_jobs(engine, out, {job_id: status})


def test_a_cancelled_job_that_completed_with_a_lot_lost_is_a_violation(engine: Engine) -> None:
    job_id, lot_ids = _job(engine, "completed", ["completed", "pending"], described=1)
    found = _checked(engine, job_id, lot_ids, "completed")
    assert f"job {job_id}: lots 2 of 2, not each completed once" in found
    assert any("descriptions per lot" in v for v in found)


def test_a_cancelled_job_that_completed_whole_passes(engine: Engine) -> None:
    job_id, lot_ids = _job(engine, "completed", ["completed", "completed"], described=2)
    assert _checked(engine, job_id, lot_ids, "completed") == []


def test_a_cancelled_job_whose_completed_lot_lost_its_texts_is_a_violation(engine: Engine) -> None:
    job_id, lot_ids = _job(engine, "cancelled", ["completed", "cancelled"], described=0)
    assert _checked(engine, job_id, lot_ids, "cancelled") == [
        f"cancelled job {job_id}: completed lots {lot_ids[:1]} lack descriptions"]


def test_a_cancelled_job_with_its_work_kept_and_the_rest_cancelled_passes(engine: Engine) -> None:
    job_id, lot_ids = _job(engine, "cancelled", ["completed", "cancelled"], described=1)
    assert _checked(engine, job_id, lot_ids, "cancelled") == []


def test_a_cancelled_job_ended_failed_is_a_violation(engine: Engine) -> None:
    job_id, lot_ids = _job(engine, "failed", ["failed", "failed"], described=0)
    assert _checked(engine, job_id, lot_ids, "failed") == [f"cancelled job {job_id} ended failed"]
