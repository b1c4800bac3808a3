"""A claim whose lease ran out before its POST started was never sent: the instance that takes the
delivery over makes the same attempt again, and records no interruption."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from lotlens_common.clock import utc_now
from lotlens_common.events import WebhookAttempted
from lotlens_common.producer import EventProducer
from lotlens_common.tables import dispatch_queue as dispatch_queue_table
from lotlens_webhook_dispatcher import dispatch_queue, payloads
from lotlens_webhook_dispatcher.claims import Room, claim
from lotlens_webhook_dispatcher.delivery import AttemptOutcome
from lotlens_webhook_dispatcher.dispatch_queue import Record
from lotlens_webhook_dispatcher.outcomes import RetryPolicy, judge
from lotlens_webhook_dispatcher.payloads import PartPlan
from lotlens_webhook_dispatcher.post_marks import PostMarks
from lotlens_webhook_dispatcher.recorder import Recorder
from lotlens_webhook_dispatcher.worker import LeaseLost
from tests.integration.webhook_dispatcher.support import (
    CLIENT,
    attempts_not_started,
    finals,
    hand_back_refused,
    of,
    one_webhook,
    publish_completed,
    queue_rows,
    quick,
    running,
    secrets_unreadable,
    state,
)
from tests.polling import wait_for

pytestmark = pytest.mark.integration

POLICY = RetryPolicy((1.0, 2.0), jitter=0.0, retry_after_cap_s=60.0)


def test_an_attempt_handed_back_too_late_is_made_again_by_the_next_instance_not_interrupted(
        config, db, proxied_db, events):
    # Its instance lost PostgreSQL before the hand-back was stored, and for longer than the lease:
    # the next instance took the delivery up and recorded attempt 1 as interrupted ("the
    # dispatcher stopped…") though nothing had been sent, and sent it as attempt 2.
    proxy, cut_off = proxied_db
    settings = quick(config)
    # The first instance's PostgreSQL is behind the proxy.
    with one_webhook(db, "/taken-over") as (hooks, url, job_id), running(settings, cut_off):
        with secrets_unreadable(db), hand_back_refused(db):
            before = attempts_not_started()
            publish_completed(config, job_id)
            wait_for(lambda: attempts_not_started() > before, "an attempt claimed, broken before its POST")
            proxy.add("postgres", "net-reset")  # neither its hand-back nor a renewal gets through
            wait_for(lambda: queue_rows(db, job_id)[0]["next_attempt_at"] < utc_now(), "the lease to run out")
        assert state(db, job_id) == [("sending", 1, 0)] and hooks.on("/taken-over") == []
        with running(settings, db):  # the next instance, PostgreSQL working
            seen = events.until(lambda seen: bool(finals(seen)))
        proxy.clear("postgres", "net-reset")
    assert [(e.attempt, e.succeeded, e.error) for e in of(WebhookAttempted, seen, url)] == [(1, True, None)]
    assert [request.attempt for request in hooks.on("/taken-over")] == [1]
    assert state(db, job_id) == [("delivered", 1, 0)]


def test_of_two_claims_of_one_unsent_attempt_only_the_first_to_start_its_post_sends(config, db):
    # The takeover makes the same attempt (the same fencing number): the mark written as a POST
    # starts is what keeps the stalled first claim from sending it as well.
    with one_webhook(db, "/fenced") as (_hooks, url, job_id):
        with db.begin() as conn:
            dispatch_queue.schedule(conn, job_id, "acme", {url: [PartPlan()]}, utc_now())
            [stalled] = claim(conn, utc_now(), Room(1, 4, 4), lease_s=1.0)
        later = utc_now() + timedelta(seconds=2)  # its lease has run out
        with db.begin() as conn:
            [taker] = claim(conn, later, Room(1, 4, 4), lease_s=1.0)
        assert (taker.attempt, taker.interrupted_attempt, taker.interruptions) == (1, None, 0)
        with db.begin() as conn:
            assert dispatch_queue.mark_posting(conn, [taker], later, 1.0).keys() == {taker.delivery_id}
            assert dispatch_queue.mark_posting(conn, [stalled], later, 1.0).keys() == set()
            # Nor can the stalled claim hand the attempt back now that it is under way.
            assert not dispatch_queue.record_many(conn, [Record(stalled, "pending", later, False)], later)
        assert state(db, job_id) == [("sending", 1, 0)]


def test_attempts_starting_together_are_all_marked_and_a_lost_claim_is_not(config, db):
    # The marks are written together (one statement for those waiting): each attempt still gets
    # its own answer.
    urls = [f"http://127.0.0.1:9/hook-{n}" for n in range(12)]
    with db.begin() as conn:
        dispatch_queue.schedule(conn, "job-marks", "acme", {url: [PartPlan()] for url in urls}, utc_now())
        claimed = claim(conn, utc_now(), Room(len(urls), len(urls), len(urls)), lease_s=60.0)
    lost = claimed[0]
    with db.begin() as conn:  # another instance took this one over and started its POST
        assert dispatch_queue.mark_posting(conn, [lost], utc_now(), 60.0).keys() == {lost.delivery_id}
    marks = PostMarks(db, 60.0, utc_now)
    with ThreadPoolExecutor(len(claimed)) as pool:
        held = [mark is not None for mark in pool.map(marks.mark, claimed)]
    assert held == [False] + [True] * (len(claimed) - 1)
    with db.connect() as conn:
        assert conn.execute(dispatch_queue_table.select().where(
            ~dispatch_queue_table.c.post_started)).all() == []



def test_a_stalled_claims_defect_is_not_recorded_over_the_attempt_the_instance_that_took_it_over_sent(
        config, db, monkeypatch):
    # The stalled claim hit a defect building its body after the takeover had marked and sent the
    # same attempt (the same fencing number): its failed attempt was stored (`pending` again, to
    # be sent once more) and the sender's `delivered` refused after its WebhookDelivered was out.
    def defect(*_args: Any, **_kwargs: Any) -> Any:
        raise ValueError("a payload defect (test)")

    with one_webhook(db, "/stalled-defect") as (_hooks, url, job_id):
        with db.begin() as conn:
            dispatch_queue.schedule(conn, job_id, CLIENT, {url: [PartPlan()]}, utc_now())
            [stalled] = claim(conn, utc_now(), Room(1, 4, 4), lease_s=1.0)
        later = utc_now() + timedelta(seconds=2)  # its lease has run out
        with db.begin() as conn:  # another instance takes it over and starts its POST
            [taker] = claim(conn, later, Room(1, 4, 4), lease_s=60.0)
            assert dispatch_queue.mark_posting(conn, [taker], later, 60.0).keys() == {taker.delivery_id}
        monkeypatch.setattr(payloads, "part_body", defect)
        with running(quick(config), db) as stalled_instance, suppress(LeaseLost):
            stalled_instance.attempt(stalled)  # its body build fails; its outcome stored as it stops
        with db.begin() as conn:  # the POST was answered 200
            stored = dispatch_queue.record_many(conn, [Record(taker, "delivered", None, True)], later)
        assert (stored, state(db, job_id)) == ({taker.delivery_id}, [("delivered", 1, 0)])


def test_an_outcome_refused_as_taken_over_is_not_counted(config, db):
    # A stalled instance's final failure, refused by the lease check, still counted `failed` while
    # the instance that took the delivery over counted its `delivered`: the failure rate alert
    # (LotLensWebhookFailureRate) read failures no receiver ever saw as final.
    with one_webhook(db, "/counted") as (_hooks, url, job_id):
        with db.begin() as conn:
            dispatch_queue.schedule(conn, job_id, CLIENT, {url: [PartPlan()]}, utc_now())
            [stalled] = claim(conn, utc_now(), Room(1, 4, 4), lease_s=1.0)
            marked = dispatch_queue.mark_posting(conn, [stalled], utc_now(), 1.0)
            assert marked.keys() == {stalled.delivery_id}
        later = utc_now() + timedelta(seconds=2)  # its lease has run out: taken over, attempt 2
        with db.begin() as conn:
            [taker] = claim(conn, later, Room(1, 4, 4), lease_s=60.0)
        assert taker.attempt == 2
        failures = failed_deliveries()
        gone = AttemptOutcome(False, 5.0, status_code=410, error="HTTP 410", final=True)
        recorder = Recorder(db, EventProducer(config.kafka, "test"), config.topics.webhooks, 60.0,
                            utc_now, lambda _: None)
        recorder.finish(stalled, judge(stalled, gone, utc_now(), utc_now(), POLICY))
        attempts_done = threading.Event()
        attempts_done.set()
        recorder.run(attempts_done)  # stores what it was given, then returns
        assert state(db, job_id) == [("sending", 2, 1)]  # the stalled claim's failure was refused
        assert failed_deliveries() == failures


def failed_deliveries() -> float:
    return REGISTRY.get_sample_value("webhook_deliveries_total", {"status": "failed"}) or 0.0
