"""A client's redelivery of a finished job's webhooks, through Kafka to a running dispatcher."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, update

from lotlens_common.dead_letters import HANDLER_FAILED
from lotlens_common.envelope import Envelope, encode
from lotlens_common.events import JobCompleted, WebhookDelivered, WebhookRedeliveryRequested
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import descriptions, jobs, lots
from lotlens_webhook_dispatcher.finished_jobs import FinishedJobs
from lotlens_webhook_dispatcher.handlers import schedule_deliveries
from tests.conftest import new_id
from tests.integration.webhook_dispatcher.support import (
    CLIENT,
    Reply,
    dispatcher_settings,
    insert_finished_job,
    of,
    publish_completed,
    queue_rows,
    receiver,
    running,
)
from tests.polling import wait_for

pytestmark = pytest.mark.integration

LIMIT = 3000  # a two-lot body fits; with a 3.6 kB description it takes two parts


def cancel_with_one_lot_unfinished(db: Engine, job_id: str) -> None:
    """The job as a cancel leaves it: `cancelled`, its unfinished lot (the last) `cancelled`."""
    with db.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.job_id == job_id).values(
            status="cancelled", cancelled_at=datetime.now(UTC), completed_at=None))
        conn.execute(update(lots).where(lots.c.job_id == job_id, lots.c.status == "failed").values(
            status="cancelled", error_message=None, missing_images=[]))


def still_running(db: Engine, job_id: str) -> None:
    """The job as the read models show it before result-store projects its cancel."""
    with db.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.job_id == job_id).values(
            status="processing", completed_at=None))


def late_result(db: Engine, job_id: str, lot_id: str, damages: str = "<p>Hail dents on the roof</p>") -> None:
    """The answer OpenAI still returns for a cancelled lot whose batch was running: the result-store
    completes the lot, so the paid work is shown."""
    with db.begin() as conn:
        conn.execute(update(lots).where(lots.c.job_id == job_id, lots.c.lot_id == lot_id).values(
            status="completed", processed_images=2))
        conn.execute(descriptions.insert().values(job_id=job_id, lot_id=lot_id, language="en",
                                                  damages=damages))


def request_redelivery(settings: ServiceSettings, job_id: str) -> None:
    """`WebhookRedeliveryRequested`, as the gateway's relay publishes it."""
    producer = EventProducer(settings.kafka, "test")
    event = WebhookRedeliveryRequested(job_id=job_id, redelivery_id=str(uuid.uuid4()),
                                       requested_at=datetime.now(UTC))
    producer.publish(settings.topics.completions, Envelope(event=event, client_id=CLIENT))
    producer.flush()


def test_a_redelivery_carries_the_job_as_it_is_now_not_as_the_first_delivery_read_it(config, db, events):
    # The dispatcher keeps a finished job's read models in memory for its deliveries' attempts. A
    # cancelled job's lots still change after its webhook (results OpenAI returns for them), and a
    # redelivery asked for afterwards was built from that copy: the receiver was told again that
    # a lot the results show completed and paid for was cancelled, without its descriptions.
    with receiver(lambda _r: Reply(200)) as hooks:
        url = f"{hooks.url}/hook"
        job_id = insert_finished_job(db, [url, url])
        cancel_with_one_lot_unfinished(db, job_id)
        publish_completed(config, job_id)
        with running(dispatcher_settings(config, new_id("g-")), db):
            events.until(lambda seen: len(of(WebhookDelivered, seen)) == 1)
            late_result(db, job_id, "lot-1")
            request_redelivery(config, job_id)
            events.until(lambda seen: len(of(WebhookDelivered, seen)) == 2)
    first, again = hooks.arrived
    assert first.headers["webhook-id"] != again.headers["webhook-id"]
    assert [lot["status"] for lot in first.doc["lots"]] == ["completed", "cancelled"]
    late = again.doc["lots"][1]
    assert (late["lot_id"], late["status"]) == ("lot-1", "completed"), again.doc["lots"]
    assert late["descriptions"] == [{"language": "en", "damages": "<p>Hail dents on the roof</p>"}]


def test_a_redelivery_handled_twice_after_a_cancelled_jobs_lots_grew_schedules_nothing_more(db):
    # A relay re-publish or a consumer replay of the same request, handled after a late answer
    # grew the cancelled job's body past the size limit: deduplicated only by delivery id, part 1
    # stayed "1 of 1" carrying every lot, and a new "part 2 of 2", under a webhook-id of its
    # own, sent lots again.
    url = "https://hooks.example/lots"
    job_id = insert_finished_job(db, [url, url])
    cancel_with_one_lot_unfinished(db, job_id)
    requested = Envelope(event=WebhookRedeliveryRequested(
        job_id=job_id, redelivery_id=str(uuid.uuid4()), requested_at=datetime.now(UTC)), client_id=CLIENT)
    with db.begin() as conn:
        assert schedule_deliveries(conn, requested, LIMIT, datetime.now(UTC)) == 1
    scheduled = queue_rows(db, job_id)
    late_result(db, job_id, "lot-1", "<p>" + "Hail dents on the roof. " * 150 + "</p>")  # 3.6 kB
    with db.begin() as conn:
        added = schedule_deliveries(conn, requested, LIMIT, datetime.now(UTC))
    assert [(row["part"], row["total_parts"]) for row in queue_rows(db, job_id)] == [(1, 1)]
    assert (added, queue_rows(db, job_id)) == (0, scheduled)


def kept_copies_of_a_cancelled_job(db: Engine) -> tuple[FinishedJobs, str, str, datetime]:
    """A cancelled job of two lots to one URL (the last unfinished), the dispatcher's cache of
    finished jobs, and the time its first deliveries were scheduled."""
    url = "https://hooks.example/lots"
    job_id = insert_finished_job(db, [url, url])
    cancel_with_one_lot_unfinished(db, job_id)
    return FinishedJobs(db), job_id, url, datetime.now(UTC)


def test_a_deliverys_retries_reuse_the_jobs_copy_and_a_later_scheduled_delivery_reads_it_again(db):
    finished, job_id, url, scheduled = kept_copies_of_a_cancelled_job(db)
    first = finished.job(job_id, scheduled)
    late_result(db, job_id, "lot-1")
    # The same message again (a retry): the copy read for it, not a read per attempt.
    assert finished.job(job_id, scheduled) is first
    assert [lot["status"] for lot in finished.lots_of(job_id, url, scheduled)()] == ["completed", "cancelled"]
    redelivered = datetime.now(UTC)
    assert finished.job(job_id, redelivered) is not first
    now_read = finished.lots_of(job_id, url, redelivered)()
    assert [lot["status"] for lot in now_read] == ["completed", "completed"]
    # The first round's retries, still going, keep their copy: no read of the whole job each time
    # the two rounds take turns.
    assert finished.job(job_id, scheduled) is first


def test_a_redelivery_scheduled_by_a_replica_whose_clock_is_behind_still_reads_the_job_again(db):
    # The times of two dispatcher replicas were compared: one 5 minutes behind scheduled the
    # redelivery "before" the first copy was read, and that stale copy was sent again.
    finished, job_id, url, scheduled = kept_copies_of_a_cancelled_job(db)
    assert [lot["status"] for lot in finished.lots_of(job_id, url, scheduled)()] == ["completed", "cancelled"]
    late_result(db, job_id, "lot-1")
    behind = scheduled - timedelta(minutes=5)
    assert [lot["status"] for lot in finished.lots_of(job_id, url, behind)()] == ["completed", "completed"]


def test_a_redelivery_of_a_running_job_holds_up_no_other_jobs_webhook(config, db, events):
    # The dispatcher retried a redelivery whose job the read models did not show finished, with
    # its whole batch, for up to 15 minutes: every partition of the consumer stopped, and no
    # other client's JobCompleted was scheduled meanwhile. Sent at once, its body had said
    # `batch_job_completed` with the job still `processing`. The gateway no longer accepts one
    # before the read models show the job ended; met anyway (a rebuild), it is dead-lettered alone.
    with receiver(lambda _r: Reply(200)) as hooks:
        running_job = insert_finished_job(db, [f"{hooks.url}/running"])
        still_running(db, running_job)
        finished_job = insert_finished_job(db, [f"{hooks.url}/finished"])
        redelivery = WebhookRedeliveryRequested(job_id=running_job, redelivery_id=str(uuid.uuid4()),
                                                requested_at=datetime.now(UTC))
        completed = JobCompleted(job_id=finished_job, status="completed", completed_at=datetime.now(UTC),
                                 total_lots=1, processed_lots=1, failed_lots=0)
        producer = EventProducer(config.kafka, "test")
        for event in (redelivery, completed):  # one partition, in this order: one batch, the redelivery first
            producer.publish_encoded(config.topics.completions, running_job.encode(),
                                     encode(Envelope(event=event, client_id=CLIENT)))
        producer.flush()
        group = new_id("g-")
        with running(dispatcher_settings(config, group), db):
            events.until(lambda seen: len(of(WebhookDelivered, seen)) == 1)
            wait_for(lambda: dead_letters(config, group) == 1, "one dead letter")
    assert [request.path for request in hooks.arrived] == ["/finished"]
    assert queue_rows(db, running_job) == []  # nothing scheduled for it: it is dead-lettered, visibly


def dead_letters(config: ServiceSettings, group: str) -> float:
    """Messages the dispatcher's consumer group sent to the dead-letter topic (its handler failed)."""
    labels = {"group": config.kafka.group_prefix + group, "reason": HANDLER_FAILED}
    return REGISTRY.get_sample_value("lotlens_dead_letters_total", labels) or 0.0
