"""A lots page is bounded by its bytes, not only its lot count: a lot may list 500 missing image
URLs of 8 KB (4 MB), so 500 lots a page could be gigabytes rendered for one request.

Memory is measured with tracemalloc, as in test_gateway_downloads.py: the gateway serves from a
thread of this test process; the client here streams the answer and keeps only its length.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import httpx2
import pytest
from sqlalchemy import Engine, update

from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import lots
from tests.integration.download_support import insert_long_texts_job, insert_unreachable_images_job
from tests.integration.gateway_support import Gateway, running_gateway

pytestmark = pytest.mark.integration
PATH = "/api/v1/batch-jobs/{job_id}/lots"
MB = 1024 * 1024


def streamed_length(gateway: Gateway, job_id: str, query: str) -> int:
    """The answer's bytes, read and dropped a piece at a time (the client holds none of them)."""
    length = 0
    with httpx2.stream("GET", f"{gateway.url}{PATH.format(job_id=job_id)}?{query}",
                       headers={"X-Signature": gateway.sign(job_id)}, timeout=120) as answer:
        assert answer.status_code == 200
        for piece in answer.iter_raw():
            length += len(piece)
    return length


def test_a_500_lot_page_of_lots_listing_long_missing_urls_allocates_a_few_megabytes(
        gateway: Gateway, engine: Engine) -> None:
    """The page was rendered whole, whatever its bytes: 500 lots listing 40 missing URLs of 2.4 KB
    each (a fiftieth of what a lot may list) are a 48 MB page, built several times over in memory."""
    job_id = insert_unreachable_images_job(engine, gateway.client_id, 500, urls_per_lot=40)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        length = streamed_length(gateway, job_id, "limit=500")
        allocated = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert length > MB // 2
    assert allocated < 24 * MB, f"{allocated / MB:.0f} MB allocated for a {length / MB:.0f} MB page"


JOBS = [
    pytest.param(lambda engine, client: insert_unreachable_images_job(engine, client, 500, urls_per_lot=40),
                 id="unreachable-images"),
    pytest.param(lambda engine, client: insert_long_texts_job(engine, client, 500), id="long-texts"),
]


def page_allocation(gateway: Gateway, job_id: str) -> tuple[int, int]:
    """A full page's bytes and the peak the gateway (and this streaming client) allocated for it."""
    streamed_length(gateway, job_id, "limit=500")  # first requests' one-off allocations
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        length = streamed_length(gateway, job_id, "limit=500")
        allocated = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return length, allocated


@pytest.mark.parametrize("make_job", JOBS)
def test_a_lots_page_allocates_about_one_and_a_half_times_its_bytes(
        settings: ServiceSettings, engine: Engine, make_job: Callable[[Engine, str], str]) -> None:
    """A page was encoded whole and joined, its lots, their pieces and the body held together: 13 MB
    (missing URLs) and 17 MB (ten long descriptions a lot) for a 4 MB page, in each of the 32
    download places at once (about 500 MB of a 768 Mi pod). Now each lot is freed once written."""
    with running_gateway(settings, engine, lots_page_max_bytes=4 * MB) as gateway:
        length, allocated = page_allocation(gateway, make_job(engine, gateway.client_id))
    assert length > 3 * MB
    assert allocated < 2 * length, f"{allocated / MB:.1f} MB allocated for a {length / MB:.1f} MB page"


@pytest.mark.parametrize("make_job", JOBS)
def test_a_lots_page_at_the_default_budget_allocates_a_few_megabytes(
        gateway: Gateway, engine: Engine, make_job: Callable[[Engine, str], str]) -> None:
    """At 4 MiB by default, 32 pages in flight were about 500 MB; at 1 MiB, streamed, about 2 MB a
    page (a megabyte of it the request's own, whatever the page), under 100 MB for 32."""
    length, allocated = page_allocation(gateway, make_job(engine, gateway.client_id))
    assert length <= MB + 64 * 1024
    assert allocated < 3 * MB, f"{allocated / MB:.1f} MB allocated for a {length / MB:.1f} MB page"


def test_walking_the_pages_gives_every_lot_once_in_order(settings: ServiceSettings, engine: Engine) -> None:
    """Lots of mixed sizes, some bigger than the budget alone: each page takes the lots that fit (at
    least one), its pagination says where the next starts, and the walk lists each lot once."""
    with running_gateway(settings, engine, lots_page_max_bytes=200_000) as gateway:
        job_id = insert_unreachable_images_job(engine, gateway.client_id, 60, urls_per_lot=10)
        with engine.begin() as conn:  # every third lot lists 100 URLs (240 KB), the others none
            conn.execute(update(lots).where(lots.c.job_id == job_id, lots.c.seq % 3 != 0)
                         .values(missing_images=[], status="completed", error_message=None))
            conn.execute(update(lots).where(lots.c.job_id == job_id, lots.c.seq % 3 == 0)
                         .values(missing_images=[f"https://img.example.com/{n}/" + "y" * 2400
                                                 for n in range(100)]))
        for query, expected in (("", [f"lot-{i}" for i in range(60)]),
                                ("status=failed&", [f"lot-{i}" for i in range(0, 60, 3)])):
            walked: list[str] = []
            offset, pages = 0, 0
            while True:
                answer = gateway.get_job(f"{PATH}?{query}limit=500&offset={offset}", job_id)
                assert answer.status_code == 200, answer.text[:300]
                body = answer.json()
                listed = [lot["lot_id"] for lot in body["lots"]]
                pagination = body["pagination"]
                assert listed and pagination["offset"] == offset and pagination["total"] == len(expected)
                assert pagination["has_more"] == (offset + len(listed) < len(expected))
                assert pagination["next_offset"] == (offset + len(listed) if pagination["has_more"] else None)
                assert len(answer.content) < 200_000 or len(listed) == 1, len(answer.content)
                walked += listed
                pages += 1
                if not pagination["has_more"]:
                    break
                assert pagination["limit"] == len(listed)
                offset += pagination["limit"]
            assert walked == expected
            assert pages > 1
