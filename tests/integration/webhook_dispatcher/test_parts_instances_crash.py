"""Payload parts, two dispatcher instances, and SIGKILL of the dispatcher mid-schedule."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import ExitStack

import httpx2
import pytest

from lotlens_common.events import WebhookAttempted, WebhookDelivered
from tests.conftest import new_id
from tests.integration.webhook_dispatcher.support import (
    KEY,
    CountingTransport,
    Reply,
    Request,
    dispatcher_settings,
    insert_finished_job,
    of,
    publish_completed,
    queue_rows,
    receiver,
    running,
    start_process,
)
from tests.polling import wait_for
from tests.seeds import seed_webhook_verifier

pytestmark = pytest.mark.integration


def test_two_dispatchers_make_each_attempt_exactly_once(config, db, events):
    with receiver(lambda r: Reply(500 if r.attempt == 1 else 200, delay_s=0.05)) as hooks:
        job_ids = [insert_finished_job(db, [f"{hooks.url}/{n}/a", f"{hooks.url}/{n}/b", None])
                   for n in range(6)]
        group = new_id("g-")
        two = dispatcher_settings(config, group, webhook_concurrency=2)
        transports = [CountingTransport(httpx2.HTTPTransport()) for _ in range(2)]
        with ExitStack() as stack:
            for transport in transports:
                stack.enter_context(running(two, db, transport))
            publish_completed(config, *job_ids)
            seen = events.until(lambda seen: len(of(WebhookDelivered, seen)) == 12, timeout_s=45)
            time.sleep(0.5)
    sent = [(request.headers["webhook-id"], request.attempt) for request in hooks.arrived]
    assert len(sent) == 24 and len(set(sent)) == 24
    assert all(transport.sent > 0 for transport in transports), [t.sent for t in transports]
    assert sorted(e.attempts for e in of(WebhookDelivered, seen)) == [2] * 12
    assert len(of(WebhookAttempted, seen)) == 24


def test_a_delivery_larger_than_the_limit_arrives_in_complete_numbered_parts(config, db, events):
    verify_webhook_signature = seed_webhook_verifier()
    limit = 3000
    with receiver(lambda _r: Reply(200)) as hooks:
        job_id = insert_finished_job(db, [f"{hooks.url}/big"] * 10, text_bytes=700)
        publish_completed(config, job_id)
        with running(dispatcher_settings(config, new_id("g-"), webhook_max_payload_bytes=limit), db):
            wait_for(lambda: queue_rows(db, job_id), "the job's deliveries scheduled")
            total = queue_rows(db, job_id)[0]["total_parts"]
            events.until(lambda seen: len(of(WebhookDelivered, seen)) == total)
    parts = sorted(hooks.arrived, key=lambda r: r.doc["part"])
    assert total >= 3 and len(parts) == total
    assert [(r.doc["part"], r.doc["total_parts"]) for r in parts] == [(p, total) for p in range(1, total + 1)]
    assert all(len(r.body) <= limit for r in parts)
    assert [lot["lot_id"] for r in parts for lot in r.doc["lots"]] == [f"lot-{n}" for n in range(10)]
    assert all(verify_webhook_signature(r.body.decode(), r.headers["x-signature"], KEY) for r in parts)
    assert len({r.headers["webhook-id"] for r in parts}) == total


def test_sigkill_mid_attempt_then_restart_continues_the_schedule_and_delivers_once(
        config, db, events, tmp_path):
    healthy = threading.Event()

    def respond(request: Request) -> Reply:
        if healthy.is_set():
            return Reply(200)
        if request.path == "/hang" and request.attempt == 2:
            return Reply(500, delay_s=20)  # the dispatcher is killed while it waits for this
        return Reply(500)

    log, group = tmp_path / "dispatcher.log", new_id("g-")
    with receiver(respond) as hooks:
        hang, flaky = f"{hooks.url}/hang", f"{hooks.url}/flaky"
        job_id = insert_finished_job(db, [hang, flaky, None])
        publish_completed(config, job_id)
        first = start_process(config, group, log)
        try:
            wait_for(lambda: len(hooks.on("/hang")) == 1 and len(hooks.on("/flaky")) >= 1,
                     "the first attempts at /hang and /flaky")
            wait_for(lambda: any(request.attempt == 2 for request in hooks.on("/hang")),
                     "the second attempt at /hang")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            healthy.set()
            hooks.release.set()  # the hung request ends; its answer goes nowhere
            second = start_process(config, group, log)
            try:
                seen = events.until(lambda seen: len(of(WebhookDelivered, seen)) == 2, timeout_s=40)
                time.sleep(0.5)
            finally:
                second.send_signal(signal.SIGTERM)
                assert second.wait(20) == 0, log.read_text()
        finally:
            if first.poll() is None:
                first.kill()
    hang_attempts = sorted(of(WebhookAttempted, seen, hang), key=lambda e: e.attempt)
    assert [(e.attempt, e.succeeded) for e in hang_attempts] == [(1, False), (2, False), (3, True)]
    assert hang_attempts[1].error.startswith("interrupted")
    assert [r.attempt for r in hooks.on("/hang")] == [1, 2, 3]
    assert len(hooks.succeeded("/hang")) == 1 and len(hooks.succeeded("/flaky")) == 1
    # The kill may land on a /flaky attempt too: then it is recorded as interrupted, never repeated.
    flaky_sent = [r.attempt for r in hooks.on("/flaky")]
    assert flaky_sent == sorted(set(flaky_sent))
    flaky_recorded = {e.attempt for e in of(WebhookAttempted, seen, flaky)}
    assert flaky_recorded == set(range(1, max(flaky_recorded) + 1)) and max(flaky_recorded) == flaky_sent[-1]
    assert sorted(e.webhook_url for e in of(WebhookDelivered, seen)) == sorted([hang, flaky])
    assert [row["status"] for row in queue_rows(db, job_id)] == ["delivered", "delivered"]
