"""The lots pages of a job the result-store has not projected (or not wholly): its lots are in the
gateway's outbox alone, and the pages list them as `batch-status` counts them and `batch-results`
lists them. They listed the projected lots only: none (total 0) for a job just accepted or
cancelled, while its results listed every lot.

No result-store runs here: what the gateway accepted stays unprojected unless a test writes rows.
Memory is measured with tracemalloc, as in test_gateway_cancelled_memory.py.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from sqlalchemy import Engine, insert, text

from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import jobs, lots
from tests.conftest import Infra, own_schema
from tests.integration.gateway_support import Gateway, make_lots, running_gateway, wait_published
from tests.integration.plan_support import executed, plans

pytestmark = pytest.mark.integration
PATH = "/api/v1/batch-jobs/{job_id}/lots"
MB = 1024 * 1024


def lots_page(gateway: Gateway, job_id: str, query: str = "") -> dict[str, Any]:
    answer = gateway.get_job(f"{PATH}?{query}", job_id)
    assert answer.status_code == 200, answer.text[:300]
    body: dict[str, Any] = answer.json()
    return body


def walk(gateway: Gateway, job_id: str, query: str = "limit=500&") -> tuple[list[tuple[str, str]], int]:
    """Every lot of the pages, followed by `pagination.next_offset`, and how many pages it took."""
    listed: list[tuple[str, str]] = []
    offset, pages = 0, 0
    while True:
        body = lots_page(gateway, job_id, f"{query}offset={offset}")
        found = [(lot["lot_id"], lot["status"]) for lot in body["lots"]]
        pagination = body["pagination"]
        assert found and pagination["offset"] == offset, body
        assert pagination["has_more"] == (offset + len(found) < pagination["total"]), pagination
        listed += found
        pages += 1
        if pagination["next_offset"] is None:
            return listed, pages
        assert pagination["next_offset"] == offset + len(found) and pagination["limit"] == len(found)
        offset = pagination["next_offset"]


def cancel(gateway: Gateway, job_id: str) -> None:
    answer = gateway.cancel(job_id)
    assert answer.status_code == 200, answer.text


def results_lots(gateway: Gateway, job_id: str) -> list[tuple[str, str]]:
    answer = gateway.get_job("/api/v1/batch-results/{job_id}", job_id)
    assert answer.status_code == 200, answer.text[:300]
    return [(lot["lot_id"], lot["status"]) for lot in answer.json()["results"]["lots"]]


def test_a_cancelled_unprojected_jobs_pages_list_every_lot_its_results_list(
        settings: ServiceSettings, engine: Engine) -> None:
    # A budget of about four such lots a page: the pages are cut by their bytes as projected ones are.
    with running_gateway(settings, engine, lots_page_max_bytes=1_000) as gateway:
        lot_list = make_lots(10, prefix="lot-" + "x" * 100)
        job_id = gateway.submit(lot_list).json()["job_id"]
        cancel(gateway, job_id)

        first = lots_page(gateway, job_id)
        assert first["status"] == "cancelled"
        assert first["pagination"]["total"] == 10, first["pagination"]
        walked, pages = walk(gateway, job_id)
        assert walked == results_lots(gateway, job_id)
        assert walked == [(lot["lot_id"], "cancelled") for lot in lot_list]
        assert pages > 2
        assert lots_page(gateway, job_id, "status=cancelled&limit=3")["pagination"]["total"] == 10
        assert lots_page(gateway, job_id, "status=pending")["pagination"]["total"] == 0


def test_a_just_accepted_jobs_lots_read_pending_a_page_at_a_time(gateway: Gateway) -> None:
    lot_list = make_lots(3)
    ids = [lot["lot_id"] for lot in lot_list]
    job_id = gateway.submit(lot_list).json()["job_id"]
    assert gateway.get_job("/api/v1/batch-status/{job_id}", job_id).json()["progress"]["total_lots"] == 3

    first = lots_page(gateway, job_id, "limit=2")
    assert first["status"] == "pending"
    assert [(lot["lot_id"], lot["status"]) for lot in first["lots"]] == [(ids[0], "pending"),
                                                                         (ids[1], "pending")]
    assert first["lots"][0] == {"lot_id": ids[0], "status": "pending", "processed_at": None,
                                "processed_images": 0, "descriptions": [], "missing_images": []}
    assert first["pagination"] == {"limit": 2, "offset": 0, "total": 3, "has_more": True, "next_offset": 2}
    last = lots_page(gateway, job_id, "limit=2&offset=2")
    assert [lot["lot_id"] for lot in last["lots"]] == ids[2:]
    assert last["pagination"]["has_more"] is False and last["pagination"]["next_offset"] is None
    assert lots_page(gateway, job_id, "status=pending")["pagination"]["total"] == 3
    assert lots_page(gateway, job_id, "status=completed") == {
        "job_id": job_id, "status": "pending", "lots": [],
        "pagination": {"limit": 100, "offset": 0, "total": 0, "has_more": False, "next_offset": None}}


def test_a_partly_projected_job_lists_its_projected_lots_then_the_outbox_ones_as_its_results_do(
        gateway: Gateway, engine: Engine) -> None:
    lot_list = make_lots(4)
    ids = [lot["lot_id"] for lot in lot_list]
    job_id = gateway.submit(lot_list).json()["job_id"]
    with engine.begin() as conn:  # the result-store has projected the job and its first two lots
        conn.execute(insert(jobs).values(job_id=job_id, client_id=gateway.client_id, status="processing",
                                         api_version="1.0.0", languages=["en"], total_lots=4))
        conn.execute(insert(lots), [{"job_id": job_id, "lot_id": ids[0], "seq": 0, "status": "completed"},
                                    {"job_id": job_id, "lot_id": ids[1], "seq": 1, "status": "processing"}])

    first = lots_page(gateway, job_id, "limit=3")
    assert [(lot["lot_id"], lot["status"]) for lot in first["lots"]] == [
        (ids[0], "completed"), (ids[1], "processing"), (ids[2], "pending")]
    assert first["pagination"]["total"] == 4 and first["pagination"]["next_offset"] == 3
    assert [lot["lot_id"] for lot in lots_page(gateway, job_id, "limit=3&offset=3")["lots"]] == ids[3:]
    assert lots_page(gateway, job_id, "status=pending")["pagination"]["total"] == 2

    cancel(gateway, job_id)
    walked, _ = walk(gateway, job_id, "limit=3&")
    assert walked == [(ids[0], "completed")] + [(lot_id, "cancelled") for lot_id in ids[1:]]
    assert walked == results_lots(gateway, job_id)
    cancelled = lots_page(gateway, job_id, "status=cancelled&limit=2&offset=1")
    assert [lot["lot_id"] for lot in cancelled["lots"]] == ids[2:4]
    assert cancelled["pagination"]["total"] == 3


def test_an_unprojected_jobs_lots_page_does_not_read_its_submissions_into_memory(
        gateway: Gateway, engine: Engine) -> None:
    """The page reads its lots' ids in PostgreSQL, by offset: a job's `LotSubmitted` rows, each with
    its image URLs and notes (200 lots of 100 URLs, 40 MB here), are never loaded whole."""
    lot_list = make_lots(200, images=100, image_base="https://img.example.com/" + "p" * 1_950)
    submitted = gateway.submit(lot_list)
    assert submitted.status_code == 201, submitted.text[:300]
    job_id = submitted.json()["job_id"]
    wait_published(gateway, engine, job_id)
    lots_page(gateway, job_id, "limit=10")  # first requests' one-off allocations

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        body = lots_page(gateway, job_id, "limit=10&offset=150")
        allocated = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert [lot["lot_id"] for lot in body["lots"]] == [lot["lot_id"] for lot in lot_list[150:160]]
    assert body["pagination"]["total"] == 200
    assert allocated < 4 * MB, f"{allocated / MB:.1f} MB allocated for a 10-lot page"


# An hour's retained outbox at a busy intake: 150,000 published rows of 100 other jobs.
_OTHER_JOBS_ROWS = """
INSERT INTO outbox (topic, job_id, client_id, event_type, payload, published_at)
SELECT 't', 'other-' || n / 1500, 'other', CASE WHEN n % 1500 = 0 THEN 'JobSubmitted' ELSE 'LotSubmitted' END,
       '{}', now()
  FROM generate_series(1, 150000) n
"""


def test_an_unprojected_jobs_lots_are_read_down_its_own_index_not_past_other_jobs_rows(
        settings: ServiceSettings, infra: Infra, engine: Engine) -> None:
    # A page of a job the result-store has not projected walked the outbox's primary key from its
    # start, past every other job's rows (7-13 ms at 150,000 rows), and its cancelled results
    # sorted all of its lots' rows by id.
    with own_schema(infra, engine) as own:
        with own.begin() as conn:
            conn.execute(text(_OTHER_JOBS_ROWS))
        with running_gateway(settings, own) as gateway:
            submitted = gateway.submit(make_lots(2_000, images=1))
            assert submitted.status_code == 201, submitted.text[:300]
            job_id = submitted.json()["job_id"]
            with own.begin() as conn:
                conn.execute(text("ANALYZE outbox"))

            def read() -> None:
                lots_page(gateway, job_id, "limit=100")
                lots_page(gateway, job_id, "limit=100&offset=1000")
                cancel(gateway, job_id)
                assert len(results_lots(gateway, job_id)) == 2_000

            statements = [(statement, parameters) for statement, parameters in executed(Engine, read)
                          if "FROM outbox" in statement and job_id in str(parameters)
                          and "LotSubmitted" in str(parameters)]
        with own.connect() as conn:
            found = plans(conn, statements)
    # Two pages (each a count and its rows' ids) and the results' lot ids at least.
    assert len(found) >= 5, statements
    # Each statement: the indexes it reads and whether it sorts.
    read_how = [(sorted({index for _, _, index in plan if index}), "Sort" in [node for node, _, _ in plan])
                for plan in found]
    shown = [(" ".join(statement.split())[:60], how)
             for (statement, _), how in zip(statements, read_how, strict=True)]
    assert read_how == [(["ix_outbox_job_events"], False)] * len(found), shown
