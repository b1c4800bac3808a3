"""The dispatcher's memory for a finished job's lots is bounded in bytes, not lots: 20,000 lots of
10 long descriptions were half a gigabyte kept whole, and a big job's lots for one URL were read
whole on every attempt (1.3 GB for 50,000 lots): past the pod's 512 MiB, killed, and killed again
on the same deliveries once their leases ran out."""

from __future__ import annotations

import tracemalloc

import pytest
from sqlalchemy import Engine

from lotlens_webhook_dispatcher.finished_jobs import FinishedJobs
from lotlens_webhook_dispatcher.payloads import head, part_body, plan_parts
from tests.integration.webhook_dispatcher.support import insert_finished_job

pytestmark = pytest.mark.integration

URL = "https://hooks.example/lots"
LIMIT = 256 * 1024  # a part's body


def test_a_job_past_the_byte_budget_is_not_kept_and_a_part_reads_its_lots_in_chunks(db: Engine) -> None:
    job_id = insert_finished_job(db, [URL] * 3000, text_bytes=2000)  # 3,000 lots, 6 MB of text
    jobs = FinishedJobs(db, max_bytes=1024 * 1024)
    job = jobs.job(job_id)
    assert job is not None
    job_head = head(job)
    lots = jobs.lots_of(job_id, URL)
    plans = plan_parts(job_head, ((URL, lot) for lot in lots()), LIMIT)[URL]
    parts = len(plans)
    assert parts > 10
    tracemalloc.start()
    try:
        body = part_body(job_head, lots, 2, parts, LIMIT, plans[1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(body) <= LIMIT and b'"lot-' in body
    assert peak < 6_000_000, f"{peak / 1e6:.1f} MB held to build one part of a job of 6 MB of text"
    assert jobs.kept_bytes() == 0  # not kept whole: over the budget
