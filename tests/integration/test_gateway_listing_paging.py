"""Walking all of a client's jobs through `GET /api/v1/batch-jobs`, page by page, when many jobs
share one second: every timestamp the API shows is whole seconds, so no time the client was shown
can say where a page ended inside a second."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from lotlens_common.tables import jobs
from tests.conftest import new_id
from tests.integration.gateway_support import Gateway, insert_finished_job, insert_running_job, make_lots

pytestmark = pytest.mark.integration

SECOND = datetime(2025, 8, 5, 7, 30, 15, tzinfo=UTC)


def jobs_in_one_second(gateway: Gateway, engine: Engine, count: int) -> list[str]:
    """`count` finished jobs of the client created inside SECOND, a few microseconds apart."""
    return [insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"],
                                created_at=SECOND + timedelta(microseconds=37 * n)) for n in range(count)]


def page(gateway: Gateway, query: str) -> dict[str, Any]:
    """One listing page (it must be answered 200)."""
    response = gateway.list_jobs(query)
    assert response.status_code == 200, f"{query}: {response.status_code} {response.text}"
    body: dict[str, Any] = response.json()
    return body


def walk(gateway: Gateway, first_query: str, between_pages: Callable[[], object] = lambda: None) -> list[str]:
    """Every job id the pages list, page after page by `pagination.next_cursor`, as the README says."""
    seen: list[str] = []
    query = first_query
    for _ in range(100):
        body = page(gateway, query)
        seen += [job["id"] for job in body["jobs"]]
        cursor = body["pagination"]["next_cursor"]
        assert (cursor is not None) == body["pagination"]["has_more"], body["pagination"]
        if cursor is None:
            return seen
        between_pages()
        query = f"{first_query}&cursor={cursor}"
    raise AssertionError(f"the pages did not end: {seen}")


def assert_each_once(seen: list[str], expected: set[str]) -> None:
    repeated = sorted(job_id for job_id, times in Counter(seen).items() if times > 1)
    assert not repeated, f"listed more than once: {repeated}"
    assert set(seen) == expected, f"skipped {len(expected - set(seen))} of {len(expected)} jobs"


def test_paging_25_jobs_made_in_one_second_ten_at_a_time_lists_each_job_once(
        gateway: Gateway, engine: Engine) -> None:
    # Paged by the oldest `created_at` shown as the next `created_before` (exclusive), the second
    # page skipped the 15 jobs of that second that did not fit on the first.
    older = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"],
                                created_at=SECOND - timedelta(microseconds=1))
    newer = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"],
                                created_at=SECOND + timedelta(seconds=1))
    same_second = jobs_in_one_second(gateway, engine, 25)
    seen = walk(gateway, "limit=10")
    assert_each_once(seen, {older, newer, *same_second})
    assert seen[0] == newer and seen[-1] == older


def test_jobs_submitted_while_the_pages_are_read_neither_shift_nor_repeat_them(
        gateway: Gateway, engine: Engine) -> None:
    # An `offset` counts from the newest job, so each job submitted between two pages pushed the
    # next page back by one, and its first job was listed twice.
    listed = set(jobs_in_one_second(gateway, engine, 12))
    submitted = [gateway.submit(make_lots(2)) for _ in range(2)]  # not projected: read from the outbox
    assert [response.status_code for response in submitted] == [201, 201]
    listed |= {response.json()["job_id"] for response in submitted}
    arrivals = iter(range(100))
    seen = walk(gateway, "limit=5", lambda: insert_running_job(
        engine, gateway.client_id, created_at=datetime.now(UTC) + timedelta(seconds=next(arrivals))))
    assert_each_once(seen, listed)


def test_a_cursor_keeps_the_filters_it_is_sent_with(gateway: Gateway, engine: Engine) -> None:
    completed = set(jobs_in_one_second(gateway, engine, 7))
    running = insert_running_job(engine, gateway.client_id, created_at=SECOND)
    assert_each_once(walk(gateway, "status=completed&limit=3"), completed)
    window = f"created_after={SECOND.isoformat()}&created_before=2025-08-05T07:30:16Z&limit=2"
    assert_each_once(walk(gateway, window), completed | {running})


def undated_job(engine: Engine, client_id: str) -> str:
    """A row the result-store wrote before the job's `JobSubmitted`, whose outbox row is gone (the
    outbox prunes what it published; a rebuild after topic retention): no creation time anywhere."""
    job_id = new_id("job-")
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(job_id=job_id, client_id=client_id, status="processing"))
    return job_id


def test_jobs_without_a_creation_time_are_listed_first_and_walked_once(
        gateway: Gateway, engine: Engine) -> None:
    # Such a job, last on a page with more to come, had no cursor to give: 500.
    undated = {undated_job(engine, gateway.client_id) for _ in range(2)}
    dated = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"], created_at=SECOND)
    first = page(gateway, "limit=1")
    assert first["jobs"][0]["id"] in undated and first["jobs"][0]["created_at"] is None
    seen = walk(gateway, "limit=1")
    assert_each_once(seen, {*undated, dated})
    assert seen == [*sorted(undated), dated]
    assert_each_once(walk(gateway, "status=processing&limit=1"), undated)


@pytest.mark.parametrize("cursor", ["yesterday", "1754379015000000", "1754379015000000.", ".job-1",
                                    "99999999999999999999999.job-1", "1754379015000000.job%201",
                                    "1754379015000000.job-1%0A", "%D9%A1%D9%A2.job-1"])
def test_a_malformed_cursor_is_refused_naming_it(gateway: Gateway, cursor: str) -> None:
    response = gateway.list_jobs(f"cursor={cursor}")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "VALIDATION_ERROR"
    assert "cursor" in response.text


def test_a_well_formed_cursor_the_listing_never_wrote_places_the_page_where_it_says(
        gateway: Gateway, engine: Engine) -> None:
    # Only the form is checked (a cursor is not signed): any such cursor is a place in the
    # client's own listing, as a `created_before` is a filter of it.
    older, _newer = jobs_in_one_second(gateway, engine, 2)  # 37 microseconds apart
    between = int(SECOND.timestamp()) * 1_000_000 + 1
    assert [job["id"] for job in page(gateway, f"cursor={between}.anything")["jobs"]] == [older]
    assert page(gateway, "cursor=1.abc")["jobs"] == []
