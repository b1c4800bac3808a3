"""The delivery schedule keeps finished deliveries for a retention period, not for good; a replay
from further back sends the webhooks again under the same webhook-ids."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, update

from lotlens_common.clock import utc_now
from lotlens_common.tables import dispatch_queue
from lotlens_webhook_dispatcher import dispatch_queue as schedule
from lotlens_webhook_dispatcher.payloads import PartPlan
from tests.conftest import new_id
from tests.integration.webhook_dispatcher.support import (
    CLIENT,
    Reply,
    dispatcher_settings,
    insert_finished_job,
    publish_completed,
    queue_rows,
    receiver,
    running,
)
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def test_finished_deliveries_are_pruned_after_the_retention_and_the_others_kept(config, db) -> None:
    # One row per delivery was kept for good: a year of per-lot webhooks at 1 million lots a day
    # is 365 million rows the claim's index walks past.
    old = utc_now() - timedelta(days=20)
    jobs = {name: insert_finished_job(db, [f"https://hooks.example.com/{name}"])
            for name in ("delivered-old", "failed-old", "delivered-new", "pending-old")}
    with db.begin() as conn:
        for name, job_id in jobs.items():
            url = f"https://hooks.example.com/{name}"
            schedule.schedule(conn, job_id, CLIENT, {url: [PartPlan()]}, utc_now())
            status = name.split("-")[0]
            when = old if name.endswith("old") else utc_now()
            # The pending one waits for a retry due tomorrow (nothing here is ever sent).
            due = utc_now() + timedelta(days=1) if status == "pending" else when
            conn.execute(update(dispatch_queue).where(dispatch_queue.c.job_id == job_id)
                         .values(status=status, next_attempt_at=due, updated_at=when))
    with running(dispatcher_settings(config, new_id("g-")), db):  # the default retention: 15 days
        wait_for(lambda: not queue_rows(db, jobs["delivered-old"]) and not queue_rows(db, jobs["failed-old"]),
                 "the old delivered and failed rows pruned")
    assert queue_rows(db, jobs["delivered-new"]) and queue_rows(db, jobs["pending-old"])


def test_a_job_completed_replayed_after_its_deliveries_were_pruned_keeps_their_webhook_ids(
        config, db, events) -> None:
    # Replayed (a group whose offsets were reset) after the prune, a job's webhooks go again: with
    # the same webhook-id, so a receiver that deduplicates as Standard Webhooks asks sees one.
    group = new_id("g-")
    with receiver(lambda _request: Reply(200)) as hooks:
        url = f"{hooks.url}/replayed"
        job_id = insert_finished_job(db, [url, None])
        with running(dispatcher_settings(config, group), db):
            publish_completed(config, job_id)
            wait_for(lambda: len(hooks.on("/replayed")) == 1, "the first webhook")
            wait_for(lambda: [row["status"] for row in queue_rows(db, job_id)] == ["delivered"],
                     "the delivery recorded")
            with db.begin() as conn:  # what the prune does after the retention
                conn.execute(delete(dispatch_queue).where(dispatch_queue.c.job_id == job_id))
            publish_completed(config, job_id)
            wait_for(lambda: len(hooks.on("/replayed")) == 2, "the webhook sent again")
    first, again = hooks.on("/replayed")
    assert first.headers["webhook-id"] == again.headers["webhook-id"]
