"""Retrying a failed lot whose `LotSubmitted` the result-store has not projected: its `lots` row
came from its failure (another topic), with no image URLs, notes or webhook. The retry reads them
from the gateway's outbox; it never sends a lot without its images.

No result-store runs here: the test writes the rows it would have projected.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
from sqlalchemy import Engine, delete, insert, update

from lotlens_common.events import LotSubmitted
from lotlens_common.tables import jobs, lots, outbox
from lotlens_gateway.retry_failed import retry_job_id
from tests.integration.gateway_support import Gateway, gateway_events, make_lots, wait_published

pytestmark = pytest.mark.integration
HOOK = "https://hooks.example.com/retried"


def finished_with_an_unrecorded_failure(gateway: Gateway, engine: Engine) -> tuple[str, dict[str, Any]]:
    """A job the gateway accepted, projected as completed: its first lot done, its second failed
    before its `LotSubmitted` was projected (the row `FAIL_LOTS` writes: no position, no images)."""
    lot_list = make_lots(2, webhook=HOOK)
    accepted = gateway.submit(lot_list)
    assert accepted.status_code == 201, accepted.text
    job_id = accepted.json()["job_id"]
    wait_published(gateway, engine, job_id)  # the relay leaves the rows alone from here on
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(
            job_id=job_id, client_id=gateway.client_id, status="completed", api_version="1.0.0",
            languages=["en"], total_lots=2, processed_lots=1, failed_lots=1, created_at=now,
            completed_at=now))
        conn.execute(insert(lots).values(
            job_id=job_id, lot_id=lot_list[0]["lot_id"], seq=0, status="completed", webhook=HOOK,
            additional_info=lot_list[0]["additional_info"],
            image_urls=[image["url"] for image in lot_list[0]["images"]]))
        conn.execute(insert(lots).values(job_id=job_id, lot_id=lot_list[1]["lot_id"], status="failed",
                                         error_message="none of the lot's 2 images could be fetched"))
    return job_id, lot_list[1]


def retry(gateway: Gateway, job_id: str) -> httpx2.Response:
    return httpx2.post(f"{gateway.url}/api/v1/batch-jobs/{job_id}/retry-failed",
                       headers={"X-Signature": gateway.sign(job_id)}, timeout=30)


def test_a_failed_lot_not_yet_recorded_is_retried_as_it_was_submitted(
        gateway: Gateway, engine: Engine) -> None:
    job_id, failed = finished_with_an_unrecorded_failure(gateway, engine)
    answer = retry(gateway, job_id)
    assert answer.status_code == 201, answer.text
    resent = [(event.lot_id, event.additional_info, list(event.image_urls), event.webhook)
              for event in (envelope.event for envelope in
                            gateway_events(engine, answer.json()["job_id"], LotSubmitted.event_type))
              if isinstance(event, LotSubmitted)]
    assert resent == [(failed["lot_id"], failed["additional_info"],
                       [image["url"] for image in failed["images"]], HOOK)]


def test_a_failed_lot_recorded_nowhere_yet_is_not_retried_without_its_images(
        gateway: Gateway, engine: Engine) -> None:
    job_id, failed = finished_with_an_unrecorded_failure(gateway, engine)
    with engine.begin() as conn:  # pruned from the outbox, and still not projected
        conn.execute(delete(outbox).where(outbox.c.job_id == job_id))
    answer = retry(gateway, job_id)
    assert answer.status_code == 409, answer.text
    assert answer.json()["code"] == "JOB_NOT_FINISHED"
    assert gateway_events(engine, retry_job_id(job_id), LotSubmitted.event_type) == []
    # Once the result-store has projected its submission, the lot is retried.
    with engine.begin() as conn:
        conn.execute(update(lots).where(lots.c.job_id == job_id, lots.c.lot_id == failed["lot_id"]).values(
            seq=1, additional_info=failed["additional_info"], webhook=HOOK,
            image_urls=[image["url"] for image in failed["images"]]))
    assert retry(gateway, job_id).status_code == 201
