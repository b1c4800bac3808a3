"""The SDK and the `lotlens` command against a real gateway (uvicorn, Kafka, PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from lotlens_client import (
    AsyncLotLensClient,
    AuthenticationError,
    Lot,
    LotLensClient,
    NotFoundError,
    ValidationError,
)
from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import jobs as jobs_table
from tests.conftest import new_id
from tests.integration.cli_support import lotlens, printed
from tests.integration.gateway_support import (
    Gateway,
    insert_finished_job,
    insert_running_job,
    make_lots,
    running_gateway,
)

pytestmark = pytest.mark.integration


@pytest.fixture()
def client(gateway: Gateway) -> Iterator[LotLensClient]:
    """The SDK as the gateway's main client."""
    with LotLensClient(gateway.url, gateway.key) as sdk:
        yield sdk


def test_a_job_is_submitted_polled_listed_and_cancelled(client: LotLensClient, gateway: Gateway) -> None:
    lot_list = make_lots(2, webhook="https://hooks.example.com/done")
    accepted = client.submit_job(lot_list, ["en", "de"], idempotency_key=new_id("order-"))
    assert accepted.status == "accepted" and accepted.total_lots == 2 and accepted.webhook_configured
    assert accepted.languages == ("en", "de") and accepted.created_at is not None

    status = client.job_status(accepted.job_id)
    assert status.status == "pending" and status.progress.total_lots == 2 and not status.is_terminal
    assert client.job_results(accepted.job_id) is None

    listed = client.list_jobs(status="pending", created_after=datetime.now(UTC) - timedelta(minutes=5))
    assert [job.job_id for job in listed.jobs] == [accepted.job_id] and listed.pagination.total == 1

    cancelled = client.cancel_job(accepted.job_id)
    assert cancelled.job_id == accepted.job_id and cancelled.status == "cancelled"


def test_the_same_idempotency_key_replays_the_same_job(client: LotLensClient) -> None:
    lot_list, key = make_lots(3), new_id("order-")
    first = client.submit_job(lot_list, idempotency_key=key)
    assert client.submit_job(lot_list, idempotency_key=key).job_id == first.job_id


def test_an_unknown_job_is_not_found_and_a_wrong_key_is_refused(client: LotLensClient, gateway: Gateway,
                                                                engine: Engine) -> None:
    with pytest.raises(NotFoundError) as raised:
        client.job_status(new_id("missing-"))
    assert raised.value.code == "JOB_NOT_FOUND"
    theirs = insert_finished_job(engine, gateway.other_id, make_lots(2), ["en"])
    with pytest.raises(NotFoundError):
        client.job_results(theirs)
    stranger = LotLensClient(gateway.url, "a-key-nobody-has")
    with stranger, pytest.raises(AuthenticationError) as refused:
        stranger.list_jobs()
    assert refused.value.status == 403 and refused.value.code == "INVALID_SIGNATURE"


def test_the_gateways_validation_errors_arrive_with_their_details(client: LotLensClient) -> None:
    broken = [Lot("a", "x", ("ftp://example.com/a.jpg",)), Lot("b", "y", ("https://example.com/b.jpg",))]
    with pytest.raises(ValidationError) as invalid:
        client.submit_job(broken)
    assert invalid.value.status == 422 and invalid.value.code == "INVALID_IMAGE_URLS"
    assert invalid.value.details["invalid_urls"] == ["ftp://example.com/a.jpg"]
    twice = make_lots(2)
    twice[1]["lot_id"] = twice[0]["lot_id"]
    with pytest.raises(ValidationError) as duplicate:
        client.submit_job(twice)
    assert duplicate.value.status == 409 and duplicate.value.code == "DUPLICATE_LOT_ID"
    with pytest.raises(ValidationError) as languages:
        client.submit_job(make_lots(2), ["en", "xx"])
    assert languages.value.code == "INVALID_LANGUAGES"


def test_a_finished_jobs_results_are_parsed_downloaded_and_not_cancellable(
        client: LotLensClient, gateway: Gateway, engine: Engine, tmp_path: Path) -> None:
    lot_list = make_lots(3)
    job_id = insert_finished_job(engine, gateway.client_id, lot_list, ["en", "de"],
                                 failed=[lot_list[2]["lot_id"]])
    seen: list[str] = []
    final = client.wait_for_job(job_id, poll_interval_s=0.1, timeout_s=10,
                                on_progress=lambda s: seen.append(s.status))
    assert final.status == "completed" and seen == ["completed"]

    results = client.job_results(job_id)
    assert results is not None and results.version == "1.0.0"
    assert [lot.lot_id for lot in results.lots] == [lot["lot_id"] for lot in lot_list]
    first, failed = results.lots[0], results.lots[2]
    assert first.description("de") == "<p>[de] Car 0, front collision</p>" and first.processed_images == 2
    assert failed.status == "failed" and failed.error_message and failed.descriptions == ()
    assert results.processing_summary.failed_lots == 1

    target = tmp_path / "results.json"
    assert client.download_results(job_id, target) == target
    downloaded = json.loads(target.read_text(encoding="utf-8"))
    assert [lot["lot_id"] for lot in downloaded["results"]["lots"]] == [lot["lot_id"] for lot in lot_list]

    with pytest.raises(ValidationError) as refused:
        client.cancel_job(job_id)
    assert refused.value.status == 400 and refused.value.details.get("status") == "completed"


def test_the_listing_filters_by_time_with_a_signed_encoded_query(
        client: LotLensClient, gateway: Gateway, engine: Engine) -> None:
    base = datetime(2025, 8, 5, 7, 30, tzinfo=UTC)
    jobs = [insert_running_job(engine, gateway.client_id, created_at=base + timedelta(hours=hours))
            for hours in range(4)]
    page = client.list_jobs(created_after=base + timedelta(hours=1),
                            created_before="2025-08-05T10:00:00+00:00", limit=1)
    assert [job.job_id for job in page.jobs] == [jobs[2]]
    assert page.pagination.total == 2 and page.pagination.has_more
    assert [job.job_id for job in client.iter_jobs(status="processing", page_size=3)] == list(reversed(jobs))


def test_a_429_is_retried_after_the_gateways_retry_after(settings: ServiceSettings, engine: Engine) -> None:
    with running_gateway(settings, engine, rate_limit_polling=1, rate_limit_window_s=1) as gateway:
        job_id = insert_running_job(engine, gateway.client_id)
        slept: list[float] = []

        def pause(seconds: float) -> None:
            slept.append(seconds)
            time.sleep(seconds)

        with LotLensClient(gateway.url, gateway.key, sleep=pause) as sdk:
            for _ in range(3):
                assert sdk.job_status(job_id).job_id == job_id
        assert slept and all(0 < wait <= 1 for wait in slept)


def test_the_async_client_does_the_same(gateway: Gateway) -> None:
    async def scenario() -> None:
        async with AsyncLotLensClient(gateway.url, gateway.key) as sdk:
            accepted = await sdk.submit_job(make_lots(2), ["en"])
            assert (await sdk.job_status(accepted.job_id)).status == "pending"
            assert await sdk.job_results(accepted.job_id) is None
            assert (await sdk.cancel_job(accepted.job_id)).status == "cancelled"
            with pytest.raises(NotFoundError):
                await sdk.job_status(new_id("missing-"))

    asyncio.run(scenario())


def test_the_command_submits_polls_lists_and_cancels(gateway: Gateway, tmp_path: Path) -> None:
    cars = [{"lot_id": lot["lot_id"], "additional_info": lot["additional_info"],
             "image_urls": [image["url"] for image in lot["images"]]} for lot in make_lots(2)]
    lots_file = tmp_path / "cars.json"
    lots_file.write_text(json.dumps(cars), encoding="utf-8")

    accepted = printed(lotlens(gateway, "submit", str(lots_file), "--languages", "en,de"))
    job_id = accepted["job_id"]
    assert accepted["status"] == "accepted" and accepted["languages"] == ["en", "de"]
    assert printed(lotlens(gateway, "status", job_id))["status"] == "pending"
    listing = printed(lotlens(gateway, "jobs", "--status", "pending", "--limit", "5"))
    assert [job["job_id"] for job in listing["jobs"]] == [job_id]

    running = lotlens(gateway, "results", job_id)
    assert running.returncode == 1 and "still pending" in running.stderr and running.stdout == ""
    assert printed(lotlens(gateway, "cancel", job_id))["status"] == "cancelled"

    unknown = lotlens(gateway, "status", "no-such-job")
    assert unknown.returncode == 1 and "404 JOB_NOT_FOUND" in unknown.stderr
    refused = lotlens(gateway, "status", job_id, key="a-key-nobody-has")
    assert refused.returncode == 1 and "403 INVALID_SIGNATURE" in refused.stderr


def test_the_command_downloads_a_finished_jobs_results(gateway: Gateway, engine: Engine,
                                                       tmp_path: Path) -> None:
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"])
    target = tmp_path / "out.json"
    saved = printed(lotlens(gateway, "results", job_id, "--download", str(target)))
    assert saved == {"job_id": job_id, "downloaded_to": str(target)}
    downloaded = json.loads(target.read_text(encoding="utf-8"))
    shown = printed(lotlens(gateway, "results", job_id))
    assert shown["job_id"] == downloaded["job_id"] == job_id and shown["status"] == "completed"
    downloaded_lots = downloaded["results"]["lots"]
    assert [lot["lot_id"] for lot in shown["lots"]] == [lot["lot_id"] for lot in downloaded_lots]
    assert shown["lots"][0]["descriptions"] == downloaded["results"]["lots"][0]["descriptions"]


def test_walking_the_jobs_lists_each_once_while_jobs_are_created_and_change_state(
        client: LotLensClient, gateway: Gateway, engine: Engine) -> None:
    # Newest first by offset: a job created between two pages moved every job a place on (the one
    # at the page's edge came twice), and one that left `processing` a place back (one never came).
    base = datetime.now(UTC) - timedelta(hours=1)
    jobs = [insert_running_job(engine, gateway.client_id, created_at=base - timedelta(minutes=m))
            for m in range(5)]
    every, processing = client.iter_jobs(page_size=2), client.iter_jobs("processing", page_size=2)
    walked, running = [next(every).job_id], [next(processing).job_id]
    insert_running_job(engine, gateway.client_id, status="pending")
    with engine.begin() as conn:
        conn.execute(update(jobs_table).where(jobs_table.c.job_id == jobs[0]).values(status="translating"))
    walked += [job.job_id for job in every]
    running += [job.job_id for job in processing]
    assert (walked, running) == (jobs, jobs)
