"""The SDK's lots pages against a real gateway (uvicorn, Kafka, PostgreSQL): the typed page and the
walk over every page by `next_offset`, pages cut short by their bytes included."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine, insert, update

from lotlens_client import AsyncLotLensClient, LotLensClient
from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import lots
from tests.integration.gateway_support import (
    Gateway,
    insert_finished_job,
    insert_running_job,
    make_lots,
    running_gateway,
)

pytestmark = pytest.mark.integration


def test_the_sdk_walks_every_lot_of_pages_their_bytes_cut_short(settings: ServiceSettings,
                                                                   engine: Engine) -> None:
    # About three such lots fit in 2,000 bytes: every page holds fewer lots than the 500 asked for.
    with running_gateway(settings, engine, lots_page_max_bytes=2_000) as gateway:
        lot_list = make_lots(9)
        ids = [lot["lot_id"] for lot in lot_list]
        job_id = insert_finished_job(engine, gateway.client_id, lot_list, ["en", "de"], failed=[ids[4]])
        with LotLensClient(gateway.url, gateway.key) as sdk:
            first = sdk.list_lots(job_id, limit=500)
            assert first.job_id == job_id and first.status == "completed"
            assert first.lots[0].lot_id == ids[0]
            assert first.lots[0].description("de") == "<p>[de] Car 0, front collision</p>"
            pagination = first.pagination
            assert pagination.total == 9 and pagination.has_more and 0 < len(first.lots) < 9
            assert pagination.next_offset == pagination.limit == len(first.lots)

            assert [lot.lot_id for lot in sdk.iter_lots(job_id, page_size=500)] == ids
            (failed,) = sdk.iter_lots(job_id, "failed")
            assert failed.lot_id == ids[4] and failed.status == "failed" and failed.error_message
            last = sdk.list_lots(job_id, offset=8)
            assert [lot.lot_id for lot in last.lots] == ids[8:] and last.pagination.next_offset is None


def test_the_async_sdk_lists_the_lots_of_a_job_it_just_submitted(gateway: Gateway) -> None:
    lot_list = make_lots(3)

    async def scenario() -> None:
        async with AsyncLotLensClient(gateway.url, gateway.key) as sdk:
            accepted = await sdk.submit_job(lot_list, ["en"])
            first = await sdk.list_lots(accepted.job_id, limit=2)
            assert first.status == "pending" and first.pagination.next_offset == 2
            assert first.pagination.total == 3
            walked = [(lot.lot_id, lot.status) async for lot in sdk.iter_lots(accepted.job_id, page_size=2)]
            assert walked == [(lot["lot_id"], "pending") for lot in lot_list]

    asyncio.run(scenario())


def test_walking_a_running_jobs_lots_by_status_misses_none_that_another_lot_leaves(
        gateway: Gateway, engine: Engine) -> None:
    # Pages by offset are filtered as of their own reading: a lot that left `processing` between
    # two pages moved the later ones a place back, and the one at the page's edge was never listed.
    job_id = insert_running_job(engine, gateway.client_id, total_lots=6)
    ids = [f"{job_id}-lot-{seq}" for seq in range(6)]
    with engine.begin() as conn:
        conn.execute(insert(lots), [{"job_id": job_id, "lot_id": lot_id, "seq": seq, "status": "processing",
                                     "image_urls": []} for seq, lot_id in enumerate(ids)])
    with LotLensClient(gateway.url, gateway.key) as sdk:
        walk = sdk.iter_lots(job_id, "processing", page_size=2)
        walked = [next(walk).lot_id]  # the first page is read
        with engine.begin() as conn:  # as the result-store projects the first lot's description
            conn.execute(update(lots).where(lots.c.job_id == job_id, lots.c.lot_id == ids[0])
                         .values(status="completed"))
        walked += [lot.lot_id for lot in walk]
        assert walked == ids
        assert [lot.lot_id for lot in sdk.iter_lots(job_id, "processing", offset=2)] == ids[3:]
