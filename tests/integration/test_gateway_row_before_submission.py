"""A job whose `jobs` row the result-store wrote from a later event (a `VisionBatchSubmitted` on
another topic, projected before the job's own `JobSubmitted`): the row has the job's status and
counters but not what only `JobSubmitted` says (created_at, languages, size, webhooks, estimate).
Until that is projected, the gateway reads those from its outbox.

The row won over the outbox: the status answered `created_at: null`, no languages, no lots, no
webhook, no estimate; the listing dropped the job from date filters and sorted it first in
PostgreSQL and last in the merge with other unprojected jobs, so it moved between pages.

No result-store runs here: what the gateway accepted stays unprojected unless a test writes rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from lotlens_common.tables import jobs
from tests.integration.gateway_support import Gateway, insert_finished_job, make_lots

pytestmark = pytest.mark.integration
WEBHOOK = "https://hooks.example.com/lotlens"


def submitted(gateway: Gateway, count: int, **fields: Any) -> dict[str, Any]:
    answer = gateway.submit(make_lots(count, webhook=WEBHOOK), languages=("en", "de"), **fields)
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def write_row_before_submission(engine: Engine, client_id: str, job_id: str) -> None:
    """The row `APPLY_JOB_CHANGES` writes for a job's first `VisionBatchSubmitted`."""
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(job_id=job_id, client_id=client_id, status="processing"))


def listed_ids(gateway: Gateway, query: str = "") -> list[str]:
    answer = gateway.list_jobs(query)
    assert answer.status_code == 200, answer.text
    return [job["id"] for job in answer.json()["jobs"]]


def test_a_row_written_before_the_jobs_submission_shows_what_the_client_submitted(
        gateway: Gateway, engine: Engine) -> None:
    accepted = submitted(gateway, 3)
    job_id = accepted["job_id"]
    write_row_before_submission(engine, gateway.client_id, job_id)
    answer = gateway.get_job("/api/v1/batch-status/{job_id}", job_id)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    shown = {"status": body["status"], "created_at": body["created_at"], "languages": body["languages"],
             "webhook_configured": body["webhook_configured"], "total_lots": body["progress"]["total_lots"],
             "has_estimate": body["progress"]["estimated_completion"] is not None}
    assert shown == {"status": "processing", "created_at": accepted["created_at"], "languages": ["en", "de"],
                     "webhook_configured": True, "total_lots": 3, "has_estimate": True}


def test_a_row_written_before_the_jobs_submission_is_listed_once_in_its_place(
        gateway: Gateway, engine: Engine) -> None:
    older = insert_finished_job(engine, gateway.client_id, make_lots(1), ["en"],
                                created_at=datetime.now(UTC) - timedelta(hours=1))
    early = submitted(gateway, 2)["job_id"]
    write_row_before_submission(engine, gateway.client_id, early)
    assert listed_ids(gateway) == [early, older]
    half_hour_ago = (datetime.now(UTC) - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert listed_ids(gateway, f"created_after={half_hour_ago}") == [early]
    # With another job only the outbox holds, newer: the two are merged in creation order.
    newest = submitted(gateway, 2)["job_id"]
    assert listed_ids(gateway) == [newest, early, older]
    paged = [job_id for offset in range(3) for job_id in listed_ids(gateway, f"limit=1&offset={offset}")]
    assert paged == [newest, early, older]
