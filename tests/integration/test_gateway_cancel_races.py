"""A cancel answered 200 while the job's last lot settles: the contract says the job reads
`cancelled` from then on (API.md, "After a 200 from cancel"), and its status, results and
`JobCompleted` (the webhook's source) must say so too.

The result-store is its batch handler (`handle`, as the service runs it) fed the events the test
names in the order it names: the gateway's own, read from its outbox, and the stages', made here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
from sqlalchemy import Engine

from lotlens_common.envelope import Envelope
from lotlens_common.events import JobCompleted, TranslationCompleted, VisionCompleted
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_result_store.completion import lock_jobs, lock_read_models
from lotlens_result_store.handlers import apply_batch, handle
from tests.conftest import Infra
from tests.integration.gateway_support import Gateway, gateway_events, make_lots
from tests.integration.lock_waits import waiting_on_a_lock
from tests.integration.result_store.support import completions
from tests.polling import wait_for

pytestmark = pytest.mark.integration
LANGUAGES = ("en", "ru")


def running_job(gateway: Gateway, engine: Engine, result_store: Callable[[list[Envelope]], None]
                ) -> tuple[str, str]:
    """A two-lot job the result-store has projected with its first lot described; its id and the
    last lot's."""
    lot_list = make_lots(2, images=1)
    submitted = gateway.submit(lot_list, languages=LANGUAGES)
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["job_id"]
    first, last = (lot["lot_id"] for lot in lot_list)
    accepted = gateway_events(engine, job_id, "JobSubmitted") + gateway_events(engine, job_id, "LotSubmitted")
    result_store(accepted + described(gateway, job_id, [first]))
    return job_id, last


def described(gateway: Gateway, job_id: str, lot_ids: Sequence[str]) -> list[Envelope]:
    """The vision and translation results of these lots, as the two stages publish them."""
    found: list[Envelope] = []
    for lot_id in lot_ids:
        found.append(Envelope(client_id=gateway.client_id, event=VisionCompleted(
            job_id=job_id, lot_id=lot_id, english_html=f"<p>{lot_id}</p>", languages=LANGUAGES,
            total_lots=2, processed_images=1, missing_images=())))
        found.append(Envelope(client_id=gateway.client_id, event=TranslationCompleted(
            job_id=job_id, lot_id=lot_id, descriptions={"ru": f"<p>{lot_id} ru</p>"})))
    return found


def test_a_job_cancelled_with_200_stays_cancelled_when_its_last_lot_is_projected_before_the_cancel(
        gateway: Gateway, engine: Engine, settings: ServiceSettings, infra: Infra) -> None:
    # The last lot settled the job `completed` before JobCancelled was projected; the gateway then
    # deferred to the terminal row: told `cancelled`, the client read `completed` and got a
    # `completed` webhook.
    producer = EventProducer(settings.kafka, "result-store-test")

    def result_store(events: list[Envelope]) -> None:
        handle(engine, producer, settings.topics.completions, events)

    job_id, last = running_job(gateway, engine, result_store)

    cancel = gateway.cancel(job_id)
    assert cancel.status_code == 200, cancel.text
    result_store(described(gateway, job_id, [last]))  # its answer was on its way before the cancel

    status = gateway.get_job("/api/v1/batch-status/{job_id}", job_id).json()
    assert status["status"] == "cancelled", status
    result_store(gateway_events(engine, job_id, "JobCancelled"))
    assert gateway.get_job("/api/v1/batch-status/{job_id}", job_id).json()["status"] == "cancelled"
    results = gateway.get_job("/api/v1/batch-results/{job_id}", job_id).json()
    assert results["status"] == "cancelled"
    assert [lot["status"] for lot in results["results"]["lots"]] == ["completed", "completed"]  # paid work
    announced = [envelope.event for envelope in completions(infra, settings.topics, job_id)]
    assert [event.status for event in announced if isinstance(event, JobCompleted)] == ["cancelled"]


def test_a_cancel_racing_the_settlement_of_the_last_lot_is_refused_once_the_job_completed(
        gateway: Gateway, engine: Engine, settings: ServiceSettings) -> None:
    # The gateway checked the job, then wrote the cancel: a settlement committed in between
    # ended the job `completed` while the client was answered 200 `cancelled`.
    producer = EventProducer(settings.kafka, "result-store-test")
    result_store = partial(handle, engine, producer, settings.topics.completions)
    job_id, last = running_job(gateway, engine, result_store)
    with ThreadPoolExecutor(1) as pool, engine.connect() as store:
        with store.begin():  # the result-store's batch of the last lot, as `handle` runs it
            lock_read_models(store)
            lock_jobs(store, [job_id])
            apply_batch(store, described(gateway, job_id, [last]), live=True)
            cancelling = pool.submit(gateway.cancel, job_id)
            wait_for(lambda: cancelling.done() or waiting_on_a_lock(engine, "SELECT pg_advisory_xact_lock"),
                     "the cancel to answer or wait on the job's lock", timeout_s=60, every_s=0.02)
        cancel = cancelling.result(timeout=30)

    assert (cancel.status_code, cancel.json()["status"]) == (400, "completed"), cancel.text
    assert gateway.get_job("/api/v1/batch-status/{job_id}", job_id).json()["status"] == "completed"


def test_two_cancels_at_once_record_one_cancellation_and_the_second_is_told_the_job_is_cancelled(
        gateway: Gateway, engine: Engine, settings: ServiceSettings) -> None:
    # Both requests found the job running before either had written its cancel: each appended its
    # own JobCancelled (two event ids, two `cancelled_at`) and each answered 200 with its own time.
    producer = EventProducer(settings.kafka, "result-store-test")
    job_id, _ = running_job(gateway, engine, partial(handle, engine, producer, settings.topics.completions))
    with ThreadPoolExecutor(2) as pool, engine.connect() as store:
        with store.begin():  # a result-store batch holding the job: both cancels wait on its lock
            lock_jobs(store, [job_id])
            cancelling = [pool.submit(gateway.cancel, job_id) for _ in range(2)]
            wait_for(lambda: any(c.done() for c in cancelling)
                     or waiting_on_a_lock(engine, "SELECT pg_advisory_xact_lock") == 2,
                     "a cancel to answer, or both to wait on the job's lock", timeout_s=60, every_s=0.02)
        answers = sorted((c.result(timeout=30) for c in cancelling), key=lambda answer: answer.status_code)

    assert len(gateway_events(engine, job_id, "JobCancelled")) == 1
    assert [answer.status_code for answer in answers] == [200, 400], [answer.text for answer in answers]
    assert answers[1].json()["status"] == "cancelled", answers[1].text
    assert gateway.get_job("/api/v1/batch-status/{job_id}", job_id).json()["status"] == "cancelled"
