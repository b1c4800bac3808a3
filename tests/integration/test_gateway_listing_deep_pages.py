"""`GET /api/v1/batch-jobs` deep in a client's jobs while one of them is not projected yet: the
page is merged from the rows near it, not from every row before it.

No result-store runs here: the job the gateway accepts stays in its outbox alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert

from lotlens_common.tables import jobs
from tests.conftest import new_id
from tests.integration.gateway_support import Gateway, make_lots

pytestmark = pytest.mark.integration


@contextmanager
def jobs_rows_fetched() -> Iterator[list[int]]:
    """The full `jobs` rows each statement sent back, on every engine's connections while inside."""
    fetched: list[int] = []

    def after(_conn: Any, cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.startswith("SELECT jobs.job_id") and cursor.rowcount > 0:
            fetched.append(cursor.rowcount)

    event.listen(Engine, "after_cursor_execute", after)
    try:
        yield fetched
    finally:
        event.remove(Engine, "after_cursor_execute", after)


def test_a_deep_page_beside_an_unprojected_job_reads_about_a_page_of_rows(
        gateway: Gateway, engine: Engine) -> None:
    # With any job unprojected the listing read every row from the first to the page's end
    # (`limit + offset` full rows, offset up to 1e9) to merge it in memory.
    start = datetime.now(UTC) - timedelta(days=1)
    older = [new_id("job-") for _ in range(300)]  # older[0] the newest of them
    with engine.begin() as conn:
        conn.execute(insert(jobs), [
            {"job_id": job_id, "client_id": gateway.client_id, "status": "completed", "api_version": "1.0.0",
             "languages": ["en"], "total_lots": 1, "created_at": start - timedelta(minutes=number)}
            for number, job_id in enumerate(older)])
    accepted = gateway.submit(make_lots(2))
    assert accepted.status_code == 201, accepted.text
    with jobs_rows_fetched() as fetched:
        answer = gateway.list_jobs("limit=10&offset=251")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    # The unprojected job is the newest: job 251 of the merged list is older[250].
    assert [job["id"] for job in body["jobs"]] == older[250:260]
    assert body["pagination"]["total"] == 301
    assert sum(fetched) <= 10 + 1, fetched  # the page and the one row the unprojected job may displace
