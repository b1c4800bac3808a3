"""A job cancelled before the result-store projected it is read from the gateway's outbox: what
reading its lots there costs the gateway.

Memory is measured with tracemalloc, as in test_gateway_downloads.py: the gateway serves from a
thread of this test process; the client here streams the answer and keeps only its bytes.
"""

from __future__ import annotations

import tracemalloc

import pytest
from sqlalchemy import Engine

from tests.integration.gateway_support import Gateway, make_lots, wait_published

pytestmark = pytest.mark.integration
MB = 1024 * 1024


def test_a_cancelled_unprojected_jobs_results_do_not_hold_its_lots_submissions_in_memory(
        gateway: Gateway, engine: Engine) -> None:
    """The lots of a job cancelled before the result-store projected it were found by loading every
    `LotSubmitted` the outbox kept for it, each with its image URLs and notes, into one list: a
    50,000-lot job's whole submission per request. 200 lots of 100 URLs (40 MB) show it."""
    lot_list = make_lots(200, images=100, image_base="https://img.example.com/" + "p" * 1_950)
    submitted = gateway.submit(lot_list)
    assert submitted.status_code == 201, submitted.text[:300]
    job_id = submitted.json()["job_id"]
    cancel = gateway.cancel(job_id)
    assert cancel.status_code == 200, cancel.text[:300]
    wait_published(gateway, engine, job_id)

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        results = gateway.get_job("/api/v1/batch-results/{job_id}", job_id)
        allocated = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()

    assert results.status_code == 200, results.text[:300]
    found = results.json()["results"]["lots"]
    assert [lot["lot_id"] for lot in found] == [lot["lot_id"] for lot in lot_list]
    assert {lot["status"] for lot in found} == {"cancelled"}
    assert allocated < 8 * MB, f"{allocated / MB:.0f} MB allocated for a {len(results.content)} byte answer"
