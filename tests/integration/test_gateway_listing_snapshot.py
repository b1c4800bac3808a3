"""`GET /api/v1/batch-jobs` while the result-store projects a job: the listing merges the jobs the
gateway accepted and the result-store has not projected yet (read from the outbox) with the
projected rows, and both reads must see one moment of the database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, select

from lotlens_common.tables import outbox
from tests.integration.gateway_support import Gateway, insert_finished_job, make_lots
from tests.integration.plan_support import on_each_statement

pytestmark = pytest.mark.integration


@pytest.fixture
def projected_between_reads(engine: Engine) -> Iterator[list[tuple[str, str]]]:
    """Projects the jobs the test names, (client, job), as the result-store would (their `jobs`
    row) the moment the gateway reads the listing's projected page, after it read which of the
    client's jobs were unprojected."""
    due: list[tuple[str, str]] = []

    def before(statement: str, _parameters: Any) -> None:
        if due and "FROM jobs" in statement and "ORDER BY jobs.created_at DESC" in statement:
            client_id, job_id = due.pop()
            with engine.connect() as own:
                created: datetime = own.execute(select(outbox.c.created_at).where(
                    outbox.c.job_id == job_id).limit(1)).scalar_one()
            insert_finished_job(engine, client_id, make_lots(2), ["en"], status="pending", job_id=job_id,
                                created_at=created)

    with on_each_statement(Engine, before):
        yield due


def test_a_job_projected_while_the_listing_is_read_is_listed_and_counted_once(
        gateway: Gateway, projected_between_reads: list[tuple[str, str]]) -> None:
    # The listing read the unprojected jobs and then the projected page in two statements of no
    # common snapshot: a job the result-store projected in between was in both, listed twice and
    # counted twice (`total` 2 for one job, `has_more` wrong at a page's edge).
    submitted = gateway.submit(make_lots(2))
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["job_id"]
    projected_between_reads.append((gateway.client_id, job_id))
    response = gateway.list_jobs()
    assert response.status_code == 200, response.text
    body = response.json()
    assert not projected_between_reads, "the page of projected jobs was not read"
    assert [job["id"] for job in body["jobs"]] == [job_id]
    assert body["pagination"]["total"] == 1
