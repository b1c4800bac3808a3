"""Deliveries against a local receiver: signatures, the retry schedule, failure kinds, slots."""

from __future__ import annotations

import time

import httpx2
import pytest
import standardwebhooks
from prometheus_client import REGISTRY

from lotlens_common.events import WebhookAttempted, WebhookDelivered, WebhookFailed
from tests.conftest import new_id
from tests.integration.webhook_dispatcher.support import (
    INTERVALS,
    KEY,
    RUSSIAN,
    Reply,
    Request,
    client_secret,
    committed,
    dispatcher_settings,
    finals,
    insert_finished_job,
    of,
    publish_completed,
    queue_rows,
    receiver,
    running,
)
from tests.polling import wait_for
from tests.seeds import seed_webhook_verifier
from tests.servers import free_port

pytestmark = pytest.mark.integration


def test_each_url_gets_one_signed_delivery_with_only_its_lots(config, db, events):
    verify_webhook_signature = seed_webhook_verifier()
    secret = client_secret(db)
    delivered_before = REGISTRY.get_sample_value("webhook_deliveries_total", {"status": "success"}) or 0
    with receiver(lambda _r: Reply(200)) as hooks:
        a, b = f"{hooks.url}/a", f"{hooks.url}/b"
        job_id = insert_finished_job(db, [a, b, None, a])
        publish_completed(config, job_id)
        # The first attempt must be the one delivered: under a full suite's load a 0.5 s timeout
        # could end it before the receiver answered, and the retry arrived as attempt 2.
        with running(dispatcher_settings(config, new_id("g-"), webhook_timeout_s=10.0), db):
            seen = events.until(lambda seen: len(of(WebhookDelivered, seen)) == 2)
    by_path = {request.path: request for request in hooks.arrived}
    assert sorted(by_path) == ["/a", "/b"] and len(hooks.arrived) == 2
    assert [lot["lot_id"] for lot in by_path["/a"].doc["lots"]] == ["lot-0", "lot-3"]
    assert [lot["lot_id"] for lot in by_path["/b"].doc["lots"]] == ["lot-1"]
    for request in by_path.values():
        headers, doc = request.headers, request.doc
        assert verify_webhook_signature(request.body.decode("utf-8"), headers["x-signature"], KEY)
        assert standardwebhooks.Webhook(secret).verify(request.body, headers) == doc
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"] == "Generation-Service/2.0"
        assert headers["x-delivery-attempt"] == "1" and headers["x-job-id"] == job_id
        assert list(doc) == ["event", "job_id", "status", "completed_at", "processing_summary", "lots"]
        assert doc["event"] == "batch_job_completed" and doc["status"] == "completed"
        assert doc["processing_summary"]["total_processing_time"] == "45 minutes"
        assert RUSSIAN.encode() in request.body
    failed_lot = by_path["/a"].doc["lots"][1]
    assert failed_lot["status"] == "failed" and failed_lot["error_message"] == "all images unreachable"
    assert by_path["/a"].doc["lots"][0]["descriptions"] == [
        {"language": "en", "damages": "<p>Front bumper dented</p>"}, {"language": "ru", "damages": RUSSIAN}]
    delivered = {e.webhook_url: e for e in of(WebhookDelivered, seen)}
    assert {url: e.attempts for url, e in delivered.items()} == {a: 1, b: 1}
    assert delivered[a].delivery_id == by_path["/a"].headers["webhook-id"]
    attempted = of(WebhookAttempted, seen)
    assert sorted((e.webhook_url, e.attempt, e.succeeded, e.status_code) for e in attempted) == \
        [(a, 1, True, 200), (b, 1, True, 200)]
    assert [row["status"] for row in queue_rows(db, job_id)] == ["delivered", "delivered"]
    delivered_after = REGISTRY.get_sample_value("webhook_deliveries_total", {"status": "success"})
    assert delivered_after == delivered_before + 2
    timed = REGISTRY.get_sample_value("lotlens_webhook_attempt_duration_seconds_count",
                                      {"outcome": "success"})
    assert (timed or 0) >= 2


def test_failures_are_retried_on_schedule_then_failed_after_five_attempts(config, db, events):
    busy_once: set[str] = set()

    def respond(request: Request) -> Reply:
        if request.path == "/busy" and request.path not in busy_once:
            busy_once.add(request.path)
            return Reply(503, {"Retry-After": "1"})
        return {"/500": Reply(500), "/slow": Reply(200, delay_s=1.5), "/gone": Reply(410),
                "/redirect": Reply(302, {"Location": "/target"})}.get(request.path, Reply(200))

    with receiver(respond) as hooks:
        urls = {name: f"{hooks.url}/{name}" for name in ("500", "slow", "gone", "redirect", "busy")}
        urls["refused"] = f"http://127.0.0.1:{free_port()}/hook"
        job_id = insert_finished_job(db, [*urls.values(), None])
        publish_completed(config, job_id)
        with running(dispatcher_settings(config, new_id("g-")), db):
            seen = events.until(lambda seen: len(finals(seen)) == 6)
            time.sleep(0.5)  # nothing more may come after the final events
    failed = {e.webhook_url: e for e in of(WebhookFailed, seen)}
    assert {url: failed[url].attempts for url in failed} == {
        urls["500"]: 5, urls["slow"]: 5, urls["redirect"]: 5, urls["refused"]: 5, urls["gone"]: 1}
    for name in ("500", "slow", "redirect"):
        assert [r.attempt for r in hooks.on(f"/{name}")] == [1, 2, 3, 4, 5]
    gaps = [b.at - a.at for a, b in zip(hooks.on("/500"), hooks.on("/500")[1:], strict=False)]
    assert all(gap >= interval * 0.9 - 0.05 for gap, interval in zip(gaps, INTERVALS, strict=True)), gaps
    # Late is only a busy machine (2 shared cores); early would be a schedule bug.
    assert all(gap <= interval * 1.1 + 2.0 for gap, interval in zip(gaps, INTERVALS, strict=True)), gaps
    assert len(hooks.on("/gone")) == 1 and not hooks.on("/target")

    def errors(name: str) -> list[str]:
        return [e.error for e in sorted(of(WebhookAttempted, seen, urls[name]), key=lambda e: e.attempt)]

    assert all(error.startswith("timeout") for error in errors("slow"))
    assert len(errors("refused")) == 5
    assert all(error.startswith("connection failed") for error in errors("refused"))
    assert all("not followed" in error for error in errors("redirect"))
    assert errors("500") == ["HTTP 500"] * 5
    attempts_500 = sorted(of(WebhookAttempted, seen, urls["500"]), key=lambda e: e.attempt)
    assert [e.next_attempt_at is not None for e in attempts_500] == [True, True, True, True, False]
    assert all(e.latency_ms is not None and e.response_body == "ok" for e in attempts_500)
    busy = hooks.on("/busy")
    assert [r.attempt for r in busy] == [1, 2] and busy[1].at - busy[0].at >= 0.95
    assert len(of(WebhookDelivered, seen)) == 1 and of(WebhookDelivered, seen)[0].webhook_url == urls["busy"]
    statuses = {row["webhook_url"]: (row["status"], row["attempt_count"])
                for row in queue_rows(db, job_id)}
    assert statuses[urls["gone"]] == ("failed", 1) and statuses[urls["500"]] == ("failed", 5)
    assert statuses[urls["busy"]] == ("delivered", 2)


def test_a_slow_endpoint_holds_only_its_own_slots(config, db, events):
    with receiver(lambda _r: Reply(200, delay_s=0.6)) as slow, receiver(lambda _r: Reply(200)) as fast:
        webhooks: list[str | None] = [f"{slow.url}/{n}" for n in range(12)]
        job_id = insert_finished_job(db, [*webhooks, f"{fast.url}/quick", None])
        publish_completed(config, job_id)
        # Five slots in all, four per host (and all five for the one client): the slow host can
        # never take the fast one's slot.
        with running(dispatcher_settings(config, new_id("g-"), webhook_concurrency=5,
                                         webhook_per_host_concurrency=4, webhook_per_client_concurrency=5,
                                         webhook_timeout_s=2), db):
            events.until(lambda seen: len(of(WebhookDelivered, seen)) == 13)
    assert slow.max_active == 4
    # Had it waited for a slot, a slow answer would have freed it: a fifth slow call would have
    # come first. Counted, not timed: on a loaded machine the first round itself can take a while.
    assert sum(r.at < fast.arrived[0].at for r in slow.arrived) <= 4


def test_hosts_with_no_attempt_under_way_are_not_kept(config, db, events):
    # Kept at zero, the per-host counts held every host ever sent to: months of per-lot webhooks
    # to many hosts grew them without bound.
    urls = [f"https://shop-{n}.example.com/hooks" for n in range(40)]
    job_id = insert_finished_job(db, [*urls, None])
    publish_completed(config, job_id)
    answering = httpx2.MockTransport(lambda _request: httpx2.Response(200))
    with running(dispatcher_settings(config, new_id("g-")), db, answering) as dispatcher:
        events.until(lambda seen: len(of(WebhookDelivered, seen)) == 40)
        wait_for(lambda: sum(dispatcher.hosts_in_flight().values()) == 0,
                 lambda: f"no host in flight (seen: {dispatcher.hosts_in_flight()})")
        assert dispatcher.hosts_in_flight() == {}


def test_a_redelivered_job_completed_creates_no_second_delivery(config, db, events):
    group = new_id("g-")
    with receiver(lambda _r: Reply(200)) as hooks:
        job_id = insert_finished_job(db, [f"{hooks.url}/a", f"{hooks.url}/b"])
        publish_completed(config, job_id)
        publish_completed(config, job_id)
        with running(dispatcher_settings(config, group), db):
            events.until(lambda seen: len(of(WebhookDelivered, seen)) == 2)
            publish_completed(config, job_id)
            wait_for(lambda: committed(config, group) == 3, "three offsets committed")
            time.sleep(0.3)
    assert sorted(request.path for request in hooks.arrived) == ["/a", "/b"]
    assert len(queue_rows(db, job_id)) == 2


def test_with_loopback_disallowed_the_guard_refuses_a_local_receiver(config, db, events):
    with receiver(lambda _r: Reply(200)) as hooks:
        job_id = insert_finished_job(db, [f"{hooks.url}/local"])
        publish_completed(config, job_id)
        with running(dispatcher_settings(config, new_id("g-"), allow_loopback_urls=False), db):
            seen = events.until(lambda seen: len(finals(seen)) == 1)
    assert hooks.arrived == [], "a webhook reached a loopback address"
    assert of(WebhookDelivered, seen) == []
    errors = [e.error for e in of(WebhookAttempted, seen)]
    refused = "127.0.0.1 resolves to a loopback address: refused"
    assert errors and all(refused in error for error in errors), errors
