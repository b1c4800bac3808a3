"""What the polling endpoints say of a job that ended: its estimate is its end, and a cancelled
job's results give the time it ran, as a completed job's do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, update

from lotlens_common.tables import jobs
from tests.integration.gateway_support import Gateway, insert_finished_job, make_lots

pytestmark = pytest.mark.integration


def test_a_job_cancelled_before_its_estimate_shows_its_end_not_the_estimate_and_the_time_it_ran(
        gateway: Gateway, engine: Engine) -> None:
    # A cancelled job kept showing the intake's estimate, hours ahead, as its expected completion,
    # and its results said `total_processing_time: null` though they gave its `completed_at`.
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=45)
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"], status="cancelled",
                                 created_at=created)  # cancelled 45 minutes after it was created
    with engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.job_id == job_id)
                     .values(estimated_completion=created + timedelta(hours=5)))
    status = gateway.get_job("/api/v1/batch-status/{job_id}", job_id).json()
    assert (status["cancelled_at"], status["progress"]["estimated_completion"]) == \
        ((created + timedelta(minutes=45)).strftime("%Y-%m-%dT%H:%M:%SZ"),) * 2
    results = gateway.get_job("/api/v1/batch-results/{job_id}", job_id).json()
    assert results["processing_summary"]["total_processing_time"] == "45 minutes"
