"""Whether a running job still has lots waiting for vision is asked at every batch of vision results:
found walking its lots from the end of the request, one lot read, whatever the statistics say."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from lotlens_result_store.projections import advance_described_jobs
from tests.conftest import Infra, new_id, own_schema, rows_read

pytestmark = pytest.mark.integration


def test_a_vision_batch_reads_one_lot_to_know_its_job_still_waits(infra: Infra, engine: Engine) -> None:
    # As in the bench, and in a deployment between large jobs: the statistics were taken when the
    # table held two finished jobs, every lot completed. The planner then took a lot still waiting
    # for rare and read all of the running job's lots at each batch, and sorted them (a 50,000-lot
    # job: about 28 ms of PostgreSQL's CPU a batch of 1,000, 1.4 CPU-s a job).
    job_id, lot_count = new_id("job-"), 4000
    with own_schema(infra, engine) as own, own.begin() as conn:
        conn.execute(text("INSERT INTO lots (job_id, lot_id, seq, status) SELECT 'finished-' || n / 10000, "
                          "'lot-' || n, n, 'completed' FROM generate_series(0, 19999) n"))
        conn.execute(text("ANALYZE lots"))
        conn.execute(text("INSERT INTO jobs (job_id, status, total_lots) "
                          "VALUES (:job, 'processing', :count)"), {"job": job_id, "count": lot_count})
        conn.execute(text("INSERT INTO lots (job_id, lot_id, seq, status) SELECT :job, 'lot-' || n, n, "
                          "CASE WHEN n < :count / 2 THEN 'translating' ELSE 'pending' END "
                          "FROM generate_series(0, :count - 1) n"), {"job": job_id, "count": lot_count})
        read_before = rows_read(conn, "lots")
        advance_described_jobs(conn, [job_id])
        read = rows_read(conn, "lots") - read_before
        status = conn.execute(text("SELECT status FROM jobs WHERE job_id = :job"),
                              {"job": job_id}).scalar_one()
    assert (status, read) == ("processing", 1)
