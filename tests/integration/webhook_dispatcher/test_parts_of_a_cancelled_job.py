"""A cancelled job's multi-part webhook, through Kafka to a running dispatcher and a loopback
receiver: its lots still complete after the cancel, and the parts sent later are still the parts
that were planned."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, delete, update

from lotlens_common.events import WebhookDelivered
from lotlens_common.read_models import get_job, iter_lot_results
from lotlens_common.tables import descriptions, jobs, lots
from lotlens_common.tables import dispatch_queue as queue
from lotlens_webhook_dispatcher import dispatch_queue
from lotlens_webhook_dispatcher.payloads import head, plan_parts
from tests.conftest import new_id
from tests.integration.webhook_dispatcher.support import (
    CLIENT,
    Reply,
    Request,
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

LIMIT = 2000


def cancel(db: Engine, job_id: str, unfinished: Iterable[int]) -> None:
    """The job as a cancel leaves it: `cancelled`, the lots still in flight `cancelled`."""
    in_flight = [f"lot-{n}" for n in unfinished]
    with db.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.job_id == job_id).values(
            status="cancelled", cancelled_at=datetime.now(UTC), completed_at=None))
        conn.execute(update(lots).where(lots.c.job_id == job_id, lots.c.lot_id.in_(in_flight)).values(
            status="cancelled", processed_images=0, processed_at=None, error_message=None,
            missing_images=[]))
        conn.execute(delete(descriptions).where(descriptions.c.job_id == job_id,
                                                descriptions.c.lot_id.in_(in_flight)))


def late_results(db: Engine, job_id: str, finished: Iterable[int]) -> None:
    """Results OpenAI still returns for cancelled lots whose batch was running: they complete,
    and the job counts them."""
    done = [f"lot-{n}" for n in finished]
    with db.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.job_id == job_id).values(
            processed_lots=jobs.c.processed_lots + len(done)))
        conn.execute(update(lots).where(lots.c.job_id == job_id, lots.c.lot_id.in_(done)).values(
            status="completed", processed_images=2, processed_at=datetime.now(UTC)))
        conn.execute(descriptions.insert().values([
            {"job_id": job_id, "lot_id": lot_id, "language": "en", "damages": "<p>" + "d" * 400 + "</p>"}
            for lot_id in done]))


def test_parts_retried_after_a_restart_carry_the_lots_planned_at_the_cancel(config, db, events):
    # 20 lots, 6 finished at the cancel. Part 1 is delivered; the others fail until the dispatcher
    # restarts (no copy of the job in memory any more), and meanwhile 8 in-flight lots complete.
    # The parts were packed again from the lots as they were then: lots fell between parts, and
    # the parts sent carried more than the limit.
    restarted = threading.Event()

    def respond(request: Request) -> Reply:
        return Reply(200 if restarted.is_set() or request.doc.get("part") == 1 else 500)

    settings = dispatcher_settings(config, new_id("g-"), webhook_max_payload_bytes=LIMIT,
                                   webhook_retry_intervals_s=(1.0, 1.0, 1.0, 1.0))
    with receiver(respond) as hooks:
        url = f"{hooks.url}/lots"
        job_id = insert_finished_job(db, [url] * 20, text_bytes=200)
        cancel(db, job_id, range(6, 20))
        publish_completed(config, job_id)
        with running(settings, db):
            wait_for(lambda: queue_rows(db, job_id), "the job's deliveries scheduled")
            total = queue_rows(db, job_id)[0]["total_parts"]
            wait_for(lambda: {r.doc.get("part") for r in hooks.on("/lots")} == set(range(1, total + 1)),
                     lambda: f"parts 1 to {total} (seen: {[r.doc.get('part') for r in hooks.on('/lots')]})")
        late_results(db, job_id, range(6, 14))
        restarted.set()
        with running(settings, db):
            events.until(lambda seen: len(of(WebhookDelivered, seen)) == total)
    parts = sorted(hooks.succeeded("/lots"), key=lambda r: r.doc["part"])
    assert total >= 3 and [r.doc["part"] for r in parts] == list(range(1, total + 1))
    assert [lot["lot_id"] for r in parts for lot in r.doc["lots"]] == [f"lot-{n}" for n in range(20)]
    assert [len(r.body) for r in parts if len(r.body) > LIMIT] == []
    # Every part tells the job as it was at the cancel: its lots, and its summary.
    statuses = {lot["lot_id"]: lot["status"] for r in parts for lot in r.doc["lots"]}
    assert [statuses[f"lot-{n}"] for n in range(6, 20)] == ["cancelled"] * 14
    assert len({str(r.doc["processing_summary"]) for r in parts}) == 1


def test_parts_scheduled_by_the_release_before_plans_are_still_sent_whole(config, db, events):
    # A rolling upgrade: deliveries the previous release scheduled have no plan (NULL).
    with receiver(lambda _r: Reply(200)) as hooks:
        url = f"{hooks.url}/old"
        job_id = insert_finished_job(db, [url] * 10, text_bytes=700)
        with db.begin() as conn:
            job = get_job(conn, job_id)
            assert job is not None
            plans = plan_parts(head(job), ((url, lot) for lot in iter_lot_results(conn, job)), LIMIT)
            dispatch_queue.schedule(conn, job_id, CLIENT, plans, datetime.now(UTC))
            conn.execute(update(queue).where(queue.c.job_id == job_id).values(part_plan=None))
        with running(dispatcher_settings(config, new_id("g-"), webhook_max_payload_bytes=LIMIT), db):
            events.until(lambda seen: len(of(WebhookDelivered, seen)) == len(plans[url]))
    parts = sorted(hooks.succeeded("/old"), key=lambda r: r.doc["part"])
    assert len(parts) == len(plans[url]) >= 3
    assert [lot["lot_id"] for r in parts for lot in r.doc["lots"]] == [f"lot-{n}" for n in range(10)]
