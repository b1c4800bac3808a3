"""An attempt that broke before its POST (its secrets or read models unreadable) sent nothing: it is
neither an attempt nor an interruption, and the delivery goes out once the reads work again."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import delete, text

from lotlens_common.clock import utc_now
from lotlens_common.events import WebhookAttempted, WebhookDelivered, WebhookFailed
from lotlens_common.tables import descriptions, jobs, lots
from lotlens_webhook_dispatcher import dispatch_queue, payloads
from lotlens_webhook_dispatcher.dispatch_queue import INTERRUPTIONS_ALLOWED, delivery_id
from lotlens_webhook_dispatcher.payloads import PartPlan
from lotlens_webhook_dispatcher.post_marks import Held, PostMarks
from tests.conftest import new_id
from tests.integration.webhook_dispatcher.support import (
    CLIENT,
    KafkaDown,
    Reply,
    Request,
    attempts_not_started,
    client_secret,
    dispatcher_settings,
    finals,
    hand_back_refused,
    insert_finished_job,
    of,
    one_webhook,
    publish_completed,
    queue_rows,
    quick,
    receiver,
    running,
    secrets_unreadable,
    state,
)
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def assert_sent_once_as_the_first_attempt(requests: list[Request], seen: list[Any], job_id: str,
                                          url: str) -> None:
    [request] = requests
    assert request.attempt == 1 and request.headers["webhook-id"] == delivery_id(job_id, url, 1)
    assert of(WebhookFailed, seen) == [] and [e.attempts for e in of(WebhookDelivered, seen)] == [1]
    assert [(e.attempt, e.succeeded) for e in of(WebhookAttempted, seen, url)] == [(1, True)]


def test_a_delivery_whose_secrets_cannot_be_read_is_neither_interrupted_nor_given_up(config, db, events):
    # Left to its lease, each attempt that broke reading the secrets was taken up again as
    # interrupted ("the dispatcher stopped…", though none had) and, after five, the delivery was
    # given up as failed without a single POST.
    with one_webhook(db, "/unsigned") as (hooks, url, job_id):
        settings = quick(config)
        with running(settings, db):
            with secrets_unreadable(db):
                before = attempts_not_started()
                publish_completed(config, job_id)
                seen = events.until(lambda seen: bool(of(WebhookFailed, seen))
                                    or attempts_not_started() - before > INTERRUPTIONS_ALLOWED, timeout_s=60)
                assert hooks.on("/unsigned") == []
                assert (of(WebhookFailed, seen), of(WebhookAttempted, seen)) == ([], [])
                assert state(db, job_id) in ([("pending", 0, 0)], [("sending", 1, 0)])
            seen = events.until(lambda seen: bool(finals(seen)))
    assert_sent_once_as_the_first_attempt(hooks.on("/unsigned"), seen, job_id, url)
    assert state(db, job_id) == [("delivered", 1, 0)]


def test_a_claim_that_cannot_be_handed_back_is_held_not_left_to_its_lease(config, db, events):
    # PostgreSQL refusing the hand-back too must not turn the attempt into an interruption: the
    # instance keeps the claim (its lease renewed) and hands it back once PostgreSQL takes it.
    with one_webhook(db, "/held") as (hooks, url, job_id):
        settings = quick(config)
        with running(settings, db):
            with secrets_unreadable(db), hand_back_refused(db):
                before = attempts_not_started()
                publish_completed(config, job_id)
                wait_for(lambda: [status for status, _, _ in state(db, job_id)] == ["sending"],
                         "the delivery claimed")
                [claimed] = queue_rows(db, job_id)
                time.sleep(3 * settings.lease_s)  # three leases: the old code took it up as interrupted
                assert state(db, job_id) == [("sending", 1, 0)] and attempts_not_started() - before == 1
                [held] = queue_rows(db, job_id)
                assert held["next_attempt_at"] > claimed["next_attempt_at"]  # its lease renewed
            seen = events.until(lambda seen: bool(finals(seen)))
    assert_sent_once_as_the_first_attempt(hooks.on("/held"), seen, job_id, url)
    assert state(db, job_id) == [("delivered", 1, 0)]


def attempts_timed(outcome: str) -> float:
    """Attempts `lotlens_webhook_attempt_duration_seconds` has timed in this process, of an outcome."""
    return REGISTRY.get_sample_value("lotlens_webhook_attempt_duration_seconds_count",
                                     {"outcome": outcome}) or 0.0


def test_a_body_that_cannot_be_built_fails_on_the_schedule_with_every_attempt_recorded(
        config, db, events, monkeypatch):
    # A defect building the body fails alike at every try: handed back like PostgreSQL's refusals,
    # the delivery stayed pending for good, with no history and no end.
    def defect(*_args: Any, **_kwargs: Any) -> Any:
        raise ValueError("a payload defect (test)")

    monkeypatch.setattr(payloads, "part_body", defect)  # the attempt's step alone (scheduling counts parts)
    timed_before = attempts_timed("failure")
    with one_webhook(db, "/defect") as (hooks, url, job_id), running(
            dispatcher_settings(config, new_id("g-")), db):
        publish_completed(config, job_id)
        seen = events.until(lambda seen: bool(finals(seen)), timeout_s=60)
    assert hooks.on("/defect") == []
    # No POST, no duration: each was timed at 0 s, and the dashboard's p95 attempt duration read
    # "fast" while a defect sent nothing at all.
    assert attempts_timed("failure") == timed_before
    [failed] = of(WebhookFailed, seen)
    assert failed.attempts == 5 and "a payload defect (test)" in str(failed.error), failed
    attempts = [(e.attempt, e.succeeded) for e in of(WebhookAttempted, seen, url)]
    assert attempts == [(n, False) for n in range(1, 6)]
    assert state(db, job_id) == [("failed", 5, 0)]


def test_a_defects_failed_attempt_that_cannot_be_marked_ends_after_the_interruptions_allowed(
        config, db, events, monkeypatch):
    # The mark of the defect's failed attempt raised out of the attempt: the row stayed `sending`
    # unmarked, and each lease later the same attempt was claimed again, no interruption counted,
    # for good.
    def defect(*_args: Any, **_kwargs: Any) -> Any:
        raise ValueError("a payload defect (test)")

    def mark_defect(*_args: Any, **_kwargs: Any) -> bool:
        raise RuntimeError("a mark defect (test)")

    monkeypatch.setattr(payloads, "part_body", defect)
    monkeypatch.setattr(PostMarks, "mark", mark_defect)
    with one_webhook(db, "/unmarked") as (hooks, _url, job_id), running(quick(config), db):
        publish_completed(config, job_id)
        seen = events.until(lambda seen: bool(finals(seen)), timeout_s=45)
    assert hooks.on("/unmarked") == [] and of(WebhookAttempted, seen) == []
    [failed] = of(WebhookFailed, seen)
    assert failed.attempts == 0 and "a mark defect (test)" in str(failed.error), failed
    assert state(db, job_id) == [("failed", 0, INTERRUPTIONS_ALLOWED + 1)]


def test_a_hand_back_is_stored_while_kafka_is_down_not_held_with_the_sent_outcomes(config, db, events):
    # A hand-back has no event, yet it sat in the recorder's group with the sent attempts' outcomes
    # and waited for their publication: while Kafka was down the unsent delivery stayed `sending`,
    # and an instance that died meanwhile left it to be recorded as interrupted.
    settings = dispatcher_settings(config, new_id("g-"))
    producer = KafkaDown(settings.kafka, "dispatcher")
    with receiver(lambda _request: Reply(200)) as hooks:
        sent_job, unsent_job = (insert_finished_job(db, [f"{hooks.url}{path}"])
                                for path in ("/sent", "/unsent"))
        client_secret(db)
        with running(settings, db, dispatch_producer=producer):
            publish_completed(config, sent_job)
            wait_for(lambda: hooks.on("/sent"), "the first webhook sent (its outcome waits for the broker)")
            with secrets_unreadable(db):
                before = attempts_not_started()
                publish_completed(config, unsent_job)
                wait_for(lambda: attempts_not_started() > before, "an attempt handed back unsent")
                wait_for(lambda: state(db, unsent_job) == [("pending", 0, 0)],
                         lambda: f"the unsent delivery pending again (seen: {state(db, unsent_job)})",
                         timeout_s=10)
                assert state(db, sent_job) == [("sending", 1, 0)] and producer.down.is_set()
            producer.down.clear()
            seen = events.until(lambda seen: len(finals(seen)) == 2)
    assert [request.attempt for request in hooks.arrived] == [1, 1] and of(WebhookFailed, seen) == []
    assert state(db, sent_job) == state(db, unsent_job) == [("delivered", 1, 0)]


def handed_back_twice_or_attempted(reason: str, url: str) -> Any:
    """Until the delivery was handed back unsent for `reason` twice (claimed again in between), or
    an attempt of it was recorded."""
    before = attempts_not_started(reason)
    return lambda seen: bool(of(WebhookAttempted, seen, url)) or attempts_not_started(reason) - before >= 2


def test_a_job_not_yet_in_the_read_models_uses_up_no_attempt_and_goes_out_once_projected(config, db, events):
    # The projector lags: the read models may not have a job yet. Each attempt was a failed one
    # ("not sent: the job is not in the read models"), and five of them gave the delivery up
    # within minutes without a single POST.
    with one_webhook(db, "/lagging") as (hooks, url, job_id), running(quick(config), db):
        with db.begin() as conn:
            read_models = [conn.execute(table.select().where(table.c.job_id == job_id)).mappings().all()
                           for table in (jobs, lots, descriptions)]
            for table in (descriptions, lots, jobs):
                conn.execute(delete(table).where(table.c.job_id == job_id))
            dispatch_queue.schedule(conn, job_id, CLIENT, {url: [PartPlan()]}, utc_now())
        seen = events.until(handed_back_twice_or_attempted("read_models", url), timeout_s=20)
        assert hooks.on("/lagging") == [] and of(WebhookAttempted, seen) == []
        assert state(db, job_id) in ([("pending", 0, 0)], [("sending", 1, 0)])
        with db.begin() as conn:  # the projector catches up
            for table, rows in zip((jobs, lots, descriptions), read_models, strict=True):
                if rows:  # its one lot failed: it has no descriptions
                    conn.execute(table.insert(), [dict(row) for row in rows])
        seen = events.until(lambda seen: bool(finals(seen)))
    assert_sent_once_as_the_first_attempt(hooks.on("/lagging"), seen, job_id, url)
    assert state(db, job_id) == [("delivered", 1, 0)]


def test_a_client_without_a_key_uses_up_no_attempt_and_goes_out_once_its_key_is_configured(
        config, db, events):
    # A missing key is the operator's omission, put right by configuring it: each attempt was a
    # failed one ("not sent: no key for client"), and the delivery was given up within minutes,
    # never sent, before anyone could add the key.
    with one_webhook(db, "/keyless") as (hooks, url, job_id):
        with running(quick(config).model_copy(update={"clients": {}}), db):
            publish_completed(config, job_id)
            seen = events.until(handed_back_twice_or_attempted("no_key", url), timeout_s=20)
        assert hooks.on("/keyless") == [] and of(WebhookAttempted, seen) == []
        assert state(db, job_id) == [("pending", 0, 0)]  # handed back as the dispatcher stopped
        with running(quick(config), db):  # restarted with the key configured
            seen = events.until(lambda seen: bool(finals(seen)))
    assert_sent_once_as_the_first_attempt(hooks.on("/keyless"), seen, job_id, url)
    assert state(db, job_id) == [("delivered", 1, 0)]


def test_a_client_whose_key_never_comes_is_given_up_with_the_reason_after_the_unready_bound(
        config, db, events):
    # A client removed from LOTLENS_CLIENTS: its deliveries were handed back every retry interval
    # for ever, never ended, and pruning (of finished rows only) never removed them.
    settings = quick(config).model_copy(update={"clients": {}, "webhook_unready_give_up_h": 1 / 3600})
    with one_webhook(db, "/never-keyed") as (hooks, url, job_id), running(settings, db):
        publish_completed(config, job_id)
        seen = events.until(lambda seen: bool(finals(seen)), timeout_s=20)
    [failed] = of(WebhookFailed, seen, url)
    assert "no key for client" in failed.error and "given up" in failed.error, failed
    assert failed.attempts == 0 and of(WebhookAttempted, seen) == [] and hooks.on("/never-keyed") == []
    assert state(db, job_id) == [("failed", 0, 0)]


def test_a_long_pending_delivery_is_given_up_the_unready_bound_after_its_first_unready_not_at_it(
        config, db, events):
    # Measured from when it was scheduled, a delivery pending over the bound (the dispatcher down
    # or backlogged, a Retry-After) was given up at its first passing unready (a key briefly
    # missing in a configuration rollout).
    settings = quick(config).model_copy(update={"clients": {}})  # no key; the bound is 24 h
    with one_webhook(db, "/late") as (hooks, url, job_id):
        with db.begin() as conn:
            dispatch_queue.schedule(conn, job_id, CLIENT, {url: [PartPlan()]},
                                    utc_now() - timedelta(hours=48))
        before = attempts_not_started("no_key")
        with running(settings, db):
            wait_for(lambda: attempts_not_started("no_key") - before >= 2
                     or state(db, job_id)[0][0] == "failed", "two attempts refused for want of a key")
            [row] = queue_rows(db, job_id)
            assert row["status"] in ("pending", "sending") and row["unready_since"] is not None, dict(row)
            with db.begin() as conn:  # its first unready was past the bound ago
                conn.execute(text("UPDATE dispatch_queue SET unready_since = now() - interval '25 hours'"
                                  " WHERE job_id = :job_id"), {"job_id": job_id})
            seen = events.until(lambda seen: bool(finals(seen)), timeout_s=20)
    [failed] = of(WebhookFailed, seen, url)
    assert "could not start for 25" in failed.error and "no key for client" in failed.error, failed
    assert failed.attempts == 0 and of(WebhookAttempted, seen) == [] and hooks.on("/late") == []
    assert state(db, job_id) == [("failed", 0, 0)]


def test_a_failure_that_could_not_be_marked_once_leaves_the_delivery_its_five_attempts(
        config, db, events, monkeypatch):
    # The unmarked hand-back gave the attempt number back yet counted an interruption, and the
    # schedule subtracts interruptions as attempts they took: the next claim made attempt 1 as
    # "attempt 0" on the schedule, and a 503 to it ended the delivery `failed` after one POST.
    real_body, real_mark = payloads.part_body, PostMarks.mark
    broke = {"body": False, "mark": False}

    def defect_once(*args: Any, **kwargs: Any) -> Any:
        if not broke["body"]:
            broke["body"] = True
            raise ValueError("a payload defect (test)")
        return real_body(*args, **kwargs)

    def mark_fails_once(self: PostMarks, delivery: Any, version_known: Any = None) -> Held | None:
        if not broke["mark"]:
            broke["mark"] = True
            raise RuntimeError("PostgreSQL blipped (test)")
        return real_mark(self, delivery, version_known)

    monkeypatch.setattr(payloads, "part_body", defect_once)
    monkeypatch.setattr(PostMarks, "mark", mark_fails_once)
    with receiver(lambda _request: Reply(503)) as hooks:
        url = f"{hooks.url}/blip"
        job_id = insert_finished_job(db, [url])
        client_secret(db)
        with running(quick(config), db):
            publish_completed(config, job_id)
            seen = events.until(lambda seen: bool(finals(seen)), timeout_s=60)
    assert broke == {"body": True, "mark": True}
    assert [request.attempt for request in hooks.on("/blip")] == [1, 2, 3, 4, 5]
    [failed] = of(WebhookFailed, seen)
    assert failed.attempts == 5 and "HTTP 503" in str(failed.error), failed
    attempts = [(e.attempt, e.succeeded) for e in of(WebhookAttempted, seen, url)]
    assert attempts == [(n, False) for n in range(1, 6)]
