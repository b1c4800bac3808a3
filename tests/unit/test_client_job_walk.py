"""`iter_jobs`, sync and async: every job once, page after page by `next_cursor`, by offset from a
gateway without cursors, and on by offset when a replica older than cursors refuses one mid-walk."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx2
import pytest

from lotlens_client import AsyncLotLensClient, ValidationError
from lotlens_common import signing
from tests.unit.client_support import BASE, KEY, FakeApi, client_of, error

FIVE_JOBS = [f"job-{i}" for i in range(5)]


def sync_walk(api: FakeApi) -> list[str]:
    client, _ = client_of(api)
    return [job.job_id for job in client.iter_jobs(page_size=2)]


def async_walk(api: FakeApi) -> list[str]:
    async def walk() -> list[str]:
        async with AsyncLotLensClient(BASE, KEY, transport=api.transport()) as client:
            return [job.job_id async for job in client.iter_jobs(page_size=2)]
    return asyncio.run(walk())


both_clients = pytest.mark.parametrize("walk", [sync_walk, async_walk])
Walk = Callable[[FakeApi], list[str]]


def queries(api: FakeApi) -> list[str]:
    return [request.url.query.decode() for request in api.received]


def test_iter_jobs_walks_every_page() -> None:
    def page(request: httpx2.Request) -> httpx2.Response:
        offset = int(request.url.params["offset"])
        jobs = [{"id": f"job-{i}", "status": "completed"} for i in range(offset, min(offset + 2, 5))]
        pagination = {"limit": 2, "offset": offset, "total": 5, "has_more": offset + len(jobs) < 5}
        return httpx2.Response(200, json={"jobs": jobs, "pagination": pagination})
    api = FakeApi().on("GET /api/v1/batch-jobs", page)
    assert sync_walk(api) == FIVE_JOBS
    assert len(api.received) == 3


def cursor_pages() -> FakeApi:
    """Five jobs in pages of 2 with `next_cursor`, and one job more submitted before each later page."""
    ids = list(FIVE_JOBS)

    def page(request: httpx2.Request) -> httpx2.Response:
        assert request.url.params["offset"] == "0"
        cursor = request.url.params.get("cursor")
        start = ids.index(cursor.partition(".")[2]) + 1 if cursor else 0
        if cursor:  # a job submitted meanwhile is newer than the cursor: it moves nothing
            ids.insert(0, f"job-new-{len(ids)}")
            start += 1
        jobs = [{"id": job_id, "status": "completed"} for job_id in ids[start:start + 2]]
        more = start + len(jobs) < len(ids)
        pagination = {"limit": 2, "offset": 0, "total": len(ids) - start, "has_more": more,
                      "next_cursor": f"1754379015000000.{jobs[-1]['id']}" if more else None}
        return httpx2.Response(200, json={"jobs": jobs, "pagination": pagination})
    return FakeApi().on("GET /api/v1/batch-jobs", page)


CURSOR_QUERIES = ["limit=2&offset=0", "limit=2&offset=0&cursor=1754379015000000.job-1",
                  "limit=2&offset=0&cursor=1754379015000000.job-3"]


@both_clients
def test_iter_jobs_starts_each_page_at_the_previous_pages_next_cursor(walk: Walk) -> None:
    api = cursor_pages()
    assert walk(api) == FIVE_JOBS
    assert queries(api) == CURSOR_QUERIES
    assert all(request.headers["X-Signature"] == signing.sign(KEY, query.encode())
               for request, query in zip(api.received, queries(api), strict=True))


def rolling_deploy(refused: str | None) -> FakeApi:
    """Five jobs in pages of 2: the first page from a new replica (with `next_cursor`), the others
    from old ones, which page by offset and refuse a `cursor` as they refuse any name they do not
    know (`deps.refuse_foreign_query`: a 422 naming it, here `refused`), or, older still (None),
    ignore it. A job is submitted after the first page, so every later offset page comes a place on."""
    ids = list(FIVE_JOBS)

    def page(request: httpx2.Request) -> httpx2.Response:
        offset = int(request.url.params["offset"])
        if "cursor" in request.url.params:
            ids.insert(0, "job-new")
        if "cursor" in request.url.params and refused:
            return error(422, "VALIDATION_ERROR", "The query string must be `name=value` pairs", {"errors": [
                {"loc": ["query", refused], "type": "unknown_parameter", "msg": "expected `name=value`"}]})
        jobs = [{"id": job_id, "status": "completed"} for job_id in ids[offset:offset + 2]]
        more = offset + len(jobs) < len(ids)
        pagination: dict[str, object] = {"limit": 2, "offset": offset, "total": len(ids), "has_more": more}
        if "cursor" not in request.url.params and offset == 0:  # the new replica's page
            pagination["next_cursor"] = f"1754379015000000.{jobs[-1]['id']}"
        return httpx2.Response(200, json={"jobs": jobs, "pagination": pagination})
    return FakeApi().on("GET /api/v1/batch-jobs", page)


@both_clients
def test_a_walk_refused_its_cursor_by_an_old_replica_goes_on_by_offset_listing_each_job_once(
        walk: Walk) -> None:
    api = rolling_deploy(refused="cursor")
    assert walk(api) == FIVE_JOBS
    assert queries(api) == ["limit=2&offset=0", "limit=2&offset=0&cursor=1754379015000000.job-1",
                            "limit=2&offset=2", "limit=2&offset=4"]


@both_clients
def test_a_422_naming_another_parameter_still_ends_the_walk(walk: Walk) -> None:
    with pytest.raises(ValidationError):
        walk(rolling_deploy(refused="limit"))


@both_clients
def test_a_walk_whose_cursor_an_older_replica_ignores_goes_on_from_the_offset_it_asked(walk: Walk) -> None:
    # Such a replica answers the first page again, with no `next_cursor`: the walk goes on after it.
    api = rolling_deploy(refused=None)
    assert walk(api) == ["job-0", "job-1", "job-new", "job-2", "job-3", "job-4"]
    assert queries(api) == ["limit=2&offset=0", "limit=2&offset=0&cursor=1754379015000000.job-1",
                            "limit=2&offset=2", "limit=2&offset=4"]
