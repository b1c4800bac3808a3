"""The SDK's lots pages over a fake API: the call, the page it parses, and the walk over every page
by `next_offset` (by `offset + pagination.limit` from a server that does not send it)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest

from lotlens_client import AsyncLotLensClient, LotPage, LotPagination
from lotlens_common import signing
from tests.unit.client_support import BASE, JOB_ID, KEY, FakeApi, client_of, lot_body

LOTS = f"GET /api/v1/batch-jobs/{JOB_ID}/lots"
LOT_IDS = [f"lot-{i}" for i in range(7)]


def pages_cut_at_three(with_next_offset: bool) -> FakeApi:
    """A job of 7 lots whose pages hold at most 3 (their bytes cut them short of any `limit`)."""
    def page(request: httpx2.Request) -> httpx2.Response:
        offset = int(request.url.params["offset"])
        found = LOT_IDS[offset:offset + min(3, int(request.url.params["limit"]))]
        more = offset + len(found) < len(LOT_IDS)
        pagination: dict[str, Any] = {"limit": len(found) if more else int(request.url.params["limit"]),
                                      "offset": offset, "total": len(LOT_IDS), "has_more": more}
        if with_next_offset:
            pagination["next_offset"] = offset + len(found) if more else None
        return httpx2.Response(200, json={"job_id": JOB_ID, "status": "processing",
                                          "lots": [lot_body(lot_id) for lot_id in found],
                                          "pagination": pagination})
    return FakeApi().on(LOTS, page)


def test_a_lots_page_is_asked_signed_over_the_job_id_and_parsed() -> None:
    api = pages_cut_at_three(with_next_offset=True)
    client, _ = client_of(api)
    page = client.list_lots(JOB_ID, "completed", limit=10, offset=2)
    request = api.received[-1]
    assert request.url.query.decode() == "status=completed&limit=10&offset=2"
    assert request.headers["X-Signature"] == signing.sign(KEY, JOB_ID.encode())
    assert isinstance(page, LotPage) and page.job_id == JOB_ID and page.status == "processing"
    assert [lot.lot_id for lot in page.lots] == LOT_IDS[2:5]
    assert page.lots[0].description("de") == "<p>[de] dented door</p>"
    assert page.pagination == LotPagination(limit=3, offset=2, total=7, has_more=True, next_offset=5)
    assert page.next_offset == 5


@pytest.mark.parametrize("with_next_offset", [True, False], ids=["next-offset", "older-server"])
def test_iter_lots_walks_every_page_a_short_page_included(with_next_offset: bool) -> None:
    api = pages_cut_at_three(with_next_offset)
    client, _ = client_of(api)
    assert [lot.lot_id for lot in client.iter_lots(JOB_ID, page_size=5)] == LOT_IDS
    assert [request.url.params["offset"] for request in api.received] == ["0", "3", "6"]


def test_the_async_client_walks_the_same_pages() -> None:
    api = pages_cut_at_three(with_next_offset=True)

    async def walk() -> list[str]:
        async with AsyncLotLensClient(BASE, KEY, transport=api.transport()) as client:
            first = await client.list_lots(JOB_ID, limit=2)
            assert first.pagination.next_offset == 2
            return [lot.lot_id async for lot in client.iter_lots(JOB_ID, "completed", page_size=5)]

    assert asyncio.run(walk()) == LOT_IDS
    # A running job's first filtered page only tells its state: its pages are filtered here.
    asked = [(request.url.params.get("status"), request.url.params["offset"]) for request in api.received[1:]]
    assert asked == [("completed", "0"), (None, "0"), (None, "3"), (None, "6")]

