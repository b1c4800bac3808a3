"""Attempts whose outcome was never recorded (an instance killed, Kafka down) use up no attempt."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, update

from lotlens_common.clock import utc_now
from lotlens_common.events import WebhookAttempted, WebhookDelivered, WebhookFailed
from lotlens_common.tables import dispatch_queue
from lotlens_webhook_dispatcher import claims
from lotlens_webhook_dispatcher import dispatch_queue as schedule
from lotlens_webhook_dispatcher.payloads import PartPlan
from tests.conftest import new_id
from tests.integration.webhook_dispatcher.support import (
    CLIENT,
    KafkaDown,
    Reply,
    attempts_not_started,
    client_secret,
    dispatcher_settings,
    finals,
    insert_finished_job,
    of,
    publish_completed,
    queue_rows,
    receiver,
    running,
    secrets_unreadable,
)
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def left_sending(db: Engine, job_id: str, url: str, attempts: int, client_id: str = CLIENT,
                 **columns: int) -> None:
    """The row a dispatcher killed during attempt `attempts` leaves, its lease run out."""
    with db.begin() as conn:
        schedule.schedule(conn, job_id, client_id, {url: [PartPlan()]}, utc_now())
        conn.execute(update(dispatch_queue).where(dispatch_queue.c.job_id == job_id).values(
            status="sending", attempt_count=attempts, next_attempt_at=utc_now(), **columns))


def test_a_dispatcher_killed_during_the_last_attempt_leaves_it_to_be_sent_not_failed(config, db, events):
    # The kill may come before the POST: giving the delivery up then lost the webhook unsent.
    with receiver(lambda _request: Reply(200)) as hooks:
        url = f"{hooks.url}/last"
        job_id = insert_finished_job(db, [url])
        left_sending(db, job_id, url, attempts=5)
        with running(dispatcher_settings(config, new_id("g-")), db):
            seen = events.until(lambda seen: bool(of(WebhookDelivered, seen) or of(WebhookFailed, seen)))
    assert of(WebhookFailed, seen) == [] and len(hooks.on("/last")) == 1
    recorded = sorted(of(WebhookAttempted, seen, url), key=lambda e: e.attempt)
    assert [(e.attempt, e.succeeded) for e in recorded] == [(5, False), (6, True)]
    assert recorded[0].error.startswith("interrupted")
    assert [(row["status"], row["interruptions"]) for row in queue_rows(db, job_id)] == [("delivered", 1)]


def test_a_delivery_that_keeps_killing_its_dispatcher_is_given_up_after_five_interruptions(
        config, db, events):
    with receiver(lambda _request: Reply(200)) as hooks:
        url = f"{hooks.url}/poison"
        job_id = insert_finished_job(db, [url])
        left_sending(db, job_id, url, attempts=7, interruptions=5)
        with running(dispatcher_settings(config, new_id("g-")), db):
            seen = events.until(lambda seen: bool(of(WebhookFailed, seen)))
    assert hooks.on("/poison") == [] and of(WebhookFailed, seen)[0].error.startswith("interrupted")


def test_an_interrupted_attempt_is_recorded_even_when_the_next_attempt_breaks_before_sending(
        config, db, events):
    # Its record went out only with the next attempt's outcome: an attempt that broke before its
    # POST (here the secrets cannot be read) took the record with it, and of a delivery that broke
    # every time only the last interrupted attempt was ever published. Those attempts sent nothing:
    # they are no interruptions (test_attempts_not_started.py), so the delivery is neither given
    # up nor recorded again, and goes out as attempt 3 once the secrets can be read.
    with receiver(lambda _request: Reply(200)) as hooks:
        url = f"{hooks.url}/broken"
        job_id = insert_finished_job(db, [url])
        client_secret(db)
        quick = dispatcher_settings(config, new_id("g-"), webhook_timeout_s=0.3, webhook_lease_margin_s=0.3)
        with running(quick, db):
            with secrets_unreadable(db):
                before = attempts_not_started()
                left_sending(db, job_id, url, attempts=2)
                seen = events.until(lambda seen: bool(of(WebhookAttempted, seen, url))
                                    and attempts_not_started() - before >= 2)
                assert hooks.on("/broken") == [] and of(WebhookFailed, seen) == []
            seen = events.until(lambda seen: bool(finals(seen)))
    recorded = sorted(of(WebhookAttempted, seen, url), key=lambda e: e.attempt)
    assert [(e.attempt, e.succeeded) for e in recorded] == [(2, False), (3, True)]
    assert recorded[0].error.startswith("interrupted") and of(WebhookFailed, seen) == []
    assert [request.attempt for request in hooks.on("/broken")] == [3]
    assert [(row["status"], row["attempt_count"], row["interruptions"])
            for row in queue_rows(db, job_id)] == [("delivered", 3, 1)]


def test_an_outcome_that_cannot_be_published_is_kept_and_recorded_once_kafka_is_back(config, db, events):
    # Left to its lease, an unrecorded attempt was taken up again as interrupted and POSTed again,
    # five times over a 10-minute outage, then given up as failed though the receiver had it.
    settings = dispatcher_settings(config, new_id("g-"))
    producer = KafkaDown(settings.kafka, "dispatcher")
    with receiver(lambda _request: Reply(200)) as hooks:
        url = f"{hooks.url}/outage"
        job_id = insert_finished_job(db, [url])
        publish_completed(config, job_id)
        with running(settings, db, dispatch_producer=producer):
            wait_for(lambda: hooks.on("/outage"), "the webhook sent in the outage", every_s=0.1)
            # Two leases: the old code took the attempt up again as interrupted and POSTed it again
            # after one (and gave a delivered webhook up as failed after five).
            time.sleep(2 * settings.lease_s)
            # Held by this instance all along (its lease renewed): no other could take it up.
            [row] = queue_rows(db, job_id)
            assert row["status"] == "sending" and row["next_attempt_at"] > utc_now()
            producer.down.clear()
            seen = events.until(lambda seen: bool(of(WebhookDelivered, seen) or of(WebhookFailed, seen)))
    assert of(WebhookFailed, seen) == [] and len(hooks.on("/outage")) == 1
    assert [(row["status"], row["attempt_count"]) for row in queue_rows(db, job_id)] == [("delivered", 1)]


def test_an_interruption_is_recorded_though_the_instance_that_took_it_over_died_before_publishing_it(
        config, db, events):
    # The takeover counted the interruption and cleared the mark in one write, and the record of
    # the interrupted attempt lived only in that instance's recorder queue: killed before it
    # flushed, the next claim saw a lapsed unmarked claim, made attempt 2 as if nothing had
    # happened, and attempt 1 was missing from the delivery's history for good.
    with receiver(lambda _request: Reply(200)) as hooks:
        url = f"{hooks.url}/taken-over"
        job_id = insert_finished_job(db, [url])
        client_secret(db)
        left_sending(db, job_id, url, attempts=1)  # A marked attempt 1 and was killed mid-POST
        with db.begin() as conn:  # B claims it and is killed before publishing anything
            [taken] = claims.claim(conn, utc_now(), claims.Room(slots=1, per_host=1, per_client=1), 30.0)
        assert (taken.attempt, taken.interrupted_attempt) == (2, 1)
        with db.begin() as conn:  # B's lease runs out
            conn.execute(update(dispatch_queue).where(dispatch_queue.c.job_id == job_id)
                         .values(next_attempt_at=utc_now()))
        with running(dispatcher_settings(config, new_id("g-")), db):
            seen = events.until(lambda seen: bool(finals(seen)))
    recorded = sorted(of(WebhookAttempted, seen, url), key=lambda e: e.attempt)
    assert [(e.attempt, e.succeeded) for e in recorded] == [(1, False), (2, True)]
    assert recorded[0].error.startswith("interrupted") and of(WebhookFailed, seen) == []
    assert [request.attempt for request in hooks.on("/taken-over")] == [2]
    [row] = queue_rows(db, job_id)
    assert (row["status"], row["attempt_count"], row["interruptions"]) == ("delivered", 2, 1)


def test_an_interruption_whose_delivery_is_handed_back_during_a_kafka_outage_is_published_once(
        config, db, events):
    # Its record waited for Kafka while each claim's hand-back (here: no key for the client) was
    # stored at once, the row still listing the interruption: every claim queued another record
    # with fresh event ids, and once Kafka was back subscribers (deduplicating by event id, as
    # the contract says) counted one interruption per claim.
    settings = dispatcher_settings(config, new_id("g-"))
    producer = KafkaDown(settings.kafka, "dispatcher")
    url = "http://127.0.0.1:9/keyless"  # never sent: the client has no key
    job_id = insert_finished_job(db, [url], client_id="keyless")
    left_sending(db, job_id, url, attempts=1, client_id="keyless")
    before = attempts_not_started("no_key")
    with running(settings, db, dispatch_producer=producer):
        wait_for(lambda: attempts_not_started("no_key") - before >= 3,
                 "three attempts refused for want of a key")
        producer.down.clear()
        events.until(lambda seen: bool(of(WebhookAttempted, seen, url)))
        wait_for(lambda: queue_rows(db, job_id)[0]["unpublished_interruptions"] == [],
                 "the interruptions published")
        time.sleep(1.5)  # a later claim's copy would follow within a hand-back's second
        events.until(lambda _seen: True)
    records = [envelope for envelope in events.envelopes
               if isinstance(envelope.event, WebhookAttempted) and envelope.event.webhook_url == url]
    assert [(r.event.attempt, r.event.error[:11]) for r in records] == [(1, "interrupted")], \
        f"{len(records)} records, {len({r.event_id for r in records})} event ids"
