"""Every listing reads a query parameter sent empty as one not sent, as API.md's own notation
(`?status=&limit=…&offset=`) implies: the job listing did, a job's lots and webhook deliveries
answered 422 "unable to parse string as an integer" for the same query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine, insert

from lotlens_common.tables import webhook_deliveries
from tests.integration.gateway_support import Gateway, insert_finished_job, make_lots, openapi_document

pytestmark = pytest.mark.integration

LOTS = "/api/v1/batch-jobs/{job_id}/lots"
WEBHOOKS = "/api/v1/batch-jobs/{job_id}/webhooks"


def answered(gateway: Gateway, path: str, job_id: str, query: str) -> dict[str, Any]:
    """The 200 body of a job-addressed listing asked with a raw query."""
    response = httpx2.get(f"{gateway.url}{path.format(job_id=job_id)}?{query}",
                          headers={"X-Signature": gateway.sign(job_id)}, timeout=30)
    assert response.status_code == 200, f"{query}: {response.status_code} {response.text}"
    body: dict[str, Any] = response.json()
    return body


def test_a_jobs_lots_asked_with_empty_parameters_are_the_first_unfiltered_page(
        gateway: Gateway, engine: Engine) -> None:
    lot_list = make_lots(5)
    ids = [lot["lot_id"] for lot in lot_list]
    job_id = insert_finished_job(engine, gateway.client_id, lot_list, ["en"], failed=[ids[3]])
    for query in ("status=&limit=&offset=", "offset=", "limit=&offset="):
        body = answered(gateway, LOTS, job_id, query)
        assert [lot["lot_id"] for lot in body["lots"]] == ids, query
        assert body["pagination"] == {"limit": 100, "offset": 0, "total": 5, "has_more": False,
                                      "next_offset": None}, query
    def lot_ids(query: str) -> list[str]:
        return [lot["lot_id"] for lot in answered(gateway, LOTS, job_id, query)["lots"]]

    assert lot_ids("status=failed&offset=") == [ids[3]]
    assert lot_ids("status=&limit=2&offset=") == ids[:2]
    assert lot_ids("limit=&offset=4") == ids[4:]


def test_a_jobs_webhook_deliveries_asked_with_empty_parameters_are_the_first_page(
        gateway: Gateway, engine: Engine) -> None:
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(1), ["en"])
    start = datetime.now(UTC) - timedelta(hours=1)
    with engine.begin() as conn:
        conn.execute(insert(webhook_deliveries), [
            {"id": f"{job_id}-d{n}", "batch_job_id": job_id, "webhook_url": f"https://hooks.example/{n}",
             "status": "delivered", "attempt_count": 1, "created_at": start + timedelta(seconds=n)}
            for n in range(3)])
    for query in ("limit=&offset=", "offset="):
        body = answered(gateway, WEBHOOKS, job_id, query)
        urls = [delivery["webhook_url"] for delivery in body["deliveries"]]
        assert urls == [f"https://hooks.example/{n}" for n in range(3)], query
        assert body["pagination"] == {"limit": 100, "offset": 0, "total": 3, "has_more": False}, query
    assert len(answered(gateway, WEBHOOKS, job_id, "limit=2&offset=")["deliveries"]) == 2
    assert len(answered(gateway, WEBHOOKS, job_id, "limit=&offset=2")["deliveries"]) == 1


def test_every_query_parameter_of_every_listing_may_be_sent_empty(gateway: Gateway, engine: Engine) -> None:
    # Whatever listing comes next: each GET route's query parameters, all sent empty, are answered
    # as if none were sent.
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"])
    routes = {path: [p["name"] for p in operation["get"].get("parameters", []) if p["in"] == "query"]
              for path, operation in openapi_document()["paths"].items() if "get" in operation}
    listings = {path: names for path, names in routes.items() if names}
    assert set(listings) >= {"/api/v1/batch-jobs", LOTS, WEBHOOKS}
    for path, names in listings.items():
        query = "&".join(f"{name}=" for name in names)
        message = query if "{job_id}" not in path else job_id
        response = httpx2.get(f"{gateway.url}{path.format(job_id=job_id)}?{query}",
                              headers={"X-Signature": gateway.sign(message)}, timeout=30)
        assert response.status_code == 200, f"{path}?{query}: {response.status_code} {response.text}"
