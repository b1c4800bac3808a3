"""`processing_summary.total_images_processed` is the sum of the lots' `processed_images` shown
beside it, whatever each lot's status: in the results and in the webhook body.

The result-store is its batch handler (`handle`, as the service runs it) fed the gateway's own
events, read from its outbox, and the stages' events, made here.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from lotlens_common.envelope import Envelope
from lotlens_common.events import Event, LotFailed, TranslationCompleted, VisionCompleted
from lotlens_common.producer import EventProducer
from lotlens_common.read_models import get_job
from lotlens_common.settings import ServiceSettings
from lotlens_result_store.handlers import handle
from lotlens_webhook_dispatcher.payloads import head
from tests.integration.gateway_support import Gateway, gateway_events, make_lots

pytestmark = pytest.mark.integration
IMAGES = 5


def _described(job_id: str, *lot_ids: str) -> list[Event]:
    """Each lot described from its 5 images, then translated."""
    return [event for lot_id in lot_ids for event in (
        VisionCompleted(job_id=job_id, lot_id=lot_id, english_html=f"<p>{lot_id}</p>", languages=("en", "ru"),
                        total_lots=2, processed_images=IMAGES, missing_images=()),
        TranslationCompleted(job_id=job_id, lot_id=lot_id, descriptions={"ru": "<p>ru</p>"}))]


def _submitted(gateway: Gateway) -> tuple[str, str, str]:
    """A two-lot job submitted through the gateway: its id and its lots' ids."""
    lot_list = make_lots(2, images=IMAGES)
    submitted = gateway.submit(lot_list, languages=("en", "ru"))
    assert submitted.status_code == 201, submitted.text
    first, second = (lot["lot_id"] for lot in lot_list)
    return submitted.json()["job_id"], first, second


def _results(gateway: Gateway, job_id: str) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """The job's `processing_summary` and its lots' (status, processed_images), as a client reads them."""
    results = gateway.get_job("/api/v1/batch-results/{job_id}", job_id)
    assert results.status_code == 200, results.text
    document = results.json()
    return document["processing_summary"], [(lot["status"], lot["processed_images"])
                                            for lot in document["results"]["lots"]]


def test_a_lot_failed_at_translation_counts_its_images_in_the_results_and_the_webhook(
        gateway: Gateway, engine: Engine, settings: ServiceSettings) -> None:
    job_id, translated, failed = _submitted(gateway)
    # The translator's LotFailed carries the image count of the lot's vision result.
    stages = [*_described(job_id, translated)[:1], *_described(job_id, failed)[:1],
              *_described(job_id, translated)[1:],
              LotFailed(job_id=job_id, lot_id=failed, stage="translation", total_lots=2,
                        reason="the translation could not be made", processed_images=IMAGES)]
    result_store(engine, settings, gateway_events(engine, job_id, "JobSubmitted")
                 + gateway_events(engine, job_id, "LotSubmitted")
                 + [Envelope(client_id=gateway.client_id, event=event) for event in stages])

    summary, lots = _results(gateway, job_id)
    assert lots == [("completed", IMAGES), ("failed", IMAGES)]
    assert summary["total_images_processed"] == sum(images for _, images in lots)
    with engine.connect() as conn:
        job = get_job(conn, job_id)
    assert job is not None
    assert head(job)["processing_summary"] == summary, "the webhook body's summary is the results'"


def test_a_cancelled_jobs_described_lot_counts_its_images(
        gateway: Gateway, engine: Engine, settings: ServiceSettings) -> None:
    job_id, translated, described = _submitted(gateway)
    result_store(engine, settings, gateway_events(engine, job_id, "JobSubmitted")
                 + gateway_events(engine, job_id, "LotSubmitted")
                 + [Envelope(client_id=gateway.client_id, event=event) for event in
                    [*_described(job_id, translated), *_described(job_id, described)[:1]]])
    assert gateway.cancel(job_id).status_code == 200
    result_store(engine, settings, gateway_events(engine, job_id, "JobCancelled"))

    summary, lots = _results(gateway, job_id)
    assert lots == [("completed", IMAGES), ("cancelled", IMAGES)]
    assert summary["total_images_processed"] == sum(images for _, images in lots)


def result_store(engine: Engine, settings: ServiceSettings, envelopes: list[Envelope]) -> None:
    """Project the events as the result-store does (one batch)."""
    producer = EventProducer(settings.kafka, "result-store-test")
    handle(engine, producer, settings.topics.completions, envelopes)
    producer.flush()
