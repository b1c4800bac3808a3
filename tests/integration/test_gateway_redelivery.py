"""Webhook redelivery is a business flow with a cost (every URL of the job delivered again, a
queue row each): a job's webhooks are sent again at most once in ten minutes. Unlimited, one
client re-sent a 50,000-URL job as often as its polling limit allowed (1,000 a minute), and every
other client's webhooks queued behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx2
import pytest
from sqlalchemy import Engine, func, insert, select, update

from lotlens_common.settings import ServiceSettings
from lotlens_common.tables import jobs, outbox, webhook_attempts, webhook_deliveries
from tests.integration.gateway_support import (
    Gateway,
    documented,
    insert_finished_job,
    insert_running_job,
    make_lots,
    running_gateway,
    wait_published,
)

pytestmark = pytest.mark.integration

REDELIVER = "/api/v1/batch-jobs/{job_id}/webhooks/redeliver"


def _finished_with_webhooks(engine: Engine, gateway: Gateway) -> str:
    job_id = insert_finished_job(engine, gateway.client_id, make_lots(2), ["en"])
    with engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.job_id == job_id).values(webhook_configured=True))
    return job_id


def _redeliver(gateway: Gateway, job_id: str) -> httpx2.Response:
    return httpx2.post(f"{gateway.url}{REDELIVER.format(job_id=job_id)}",
                       headers={"X-Signature": gateway.sign(job_id)}, timeout=30)


def test_a_jobs_webhooks_are_redelivered_at_most_once_in_ten_minutes(gateway: Gateway, engine: Engine
                                                                    ) -> None:
    job_id, other = _finished_with_webhooks(engine, gateway), _finished_with_webhooks(engine, gateway)
    assert _redeliver(gateway, job_id).status_code == 202
    again = _redeliver(gateway, job_id)
    assert again.status_code == 429, again.text
    body = again.json()
    assert body["code"] == "RATE_LIMIT_EXCEEDED" and body["details"]["reason"] == "redelivered_recently"
    assert 1 <= int(again.headers["retry-after"]) <= 600
    assert _redeliver(gateway, other).status_code == 202  # another job is another flow


def test_a_client_redelivers_at_most_ten_jobs_in_ten_minutes(gateway: Gateway, engine: Engine) -> None:
    # Once a job only, a client with many finished jobs redelivered every one of them in a row:
    # each is every URL of the job again (up to 50,000 queue rows), all on its own dispatcher share.
    allowed = 10  # LOTLENS_WEBHOOK_REDELIVERIES_PER_CLIENT's default
    job_ids = [_finished_with_webhooks(engine, gateway) for _ in range(allowed + 1)]
    answers = [_redeliver(gateway, job_id).status_code for job_id in job_ids]
    assert answers[:allowed] == [202] * allowed
    refused = _redeliver(gateway, job_ids[-1])
    assert answers[allowed] == 429 and refused.status_code == 429, (answers, refused.text)
    body = refused.json()
    assert set(body) == {"error", "message", "code", "details"} and body["code"] == "RATE_LIMIT_EXCEEDED"
    assert body["details"] == {"reason": "client_redelivered_too_often", "limit": allowed, "window_s": 600}
    assert 1 <= int(refused.headers["retry-after"]) <= 600
    with engine.connect() as conn:  # a refused request records nothing
        recorded = conn.execute(select(func.count()).select_from(outbox).where(
            outbox.c.client_id == gateway.client_id,
            outbox.c.event_type == "WebhookRedeliveryRequested")).scalar_one()
    assert recorded == allowed
    # Another client's redeliveries are its own.
    other = insert_finished_job(engine, gateway.other_id, make_lots(2), ["en"])
    with engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.job_id == other).values(webhook_configured=True))
    answer = httpx2.post(f"{gateway.url}{REDELIVER.format(job_id=other)}",
                         headers={"X-Signature": gateway.sign(other, gateway.other_key)}, timeout=30)
    assert answer.status_code == 202, answer.text


def test_a_jobs_deliveries_are_listed_a_page_at_a_time(gateway: Gateway, engine: Engine) -> None:
    # The whole list in one answer: a 50,000-URL job with 5 attempts each was 72 MB, written on
    # the event loop in one piece.
    job_id = _finished_with_webhooks(engine, gateway)
    start = datetime.now(UTC) - timedelta(hours=1)
    with engine.begin() as conn:
        conn.execute(insert(webhook_deliveries), [
            {"id": f"{job_id}-d{n:03}", "batch_job_id": job_id, "webhook_url": f"https://hooks.example/{n}",
             "status": "delivered", "attempt_count": 1, "created_at": start + timedelta(seconds=n)}
            for n in range(250)])
        conn.execute(insert(webhook_attempts), [
            {"delivery_id": f"{job_id}-d{n:03}", "attempt": 1, "attempted_at": start, "succeeded": True,
             "status_code": 200} for n in range(250)])

    def listed(query: str = "") -> httpx2.Response:
        return httpx2.get(f"{gateway.url}/api/v1/batch-jobs/{job_id}/webhooks{query}",
                          headers={"X-Signature": gateway.sign(job_id)}, timeout=30)

    first = listed().json()
    urls = [d["webhook_url"] for d in first["deliveries"]]
    assert urls == [f"https://hooks.example/{n}" for n in range(100)]
    assert first["pagination"] == {"limit": 100, "offset": 0, "total": 250, "has_more": True}
    assert all(d["attempts"][0]["status_code"] == 200 for d in first["deliveries"])
    last = listed("?limit=100&offset=200").json()
    assert len(last["deliveries"]) == 50 and not last["pagination"]["has_more"]
    assert last["deliveries"][-1]["id"] == f"{job_id}-d249"
    assert listed("?limit=501").status_code == 422


def test_a_redelivery_that_cannot_be_made_says_why_in_codes_the_api_document_names(
        gateway: Gateway, engine: Engine) -> None:
    # The document listed the body-parsing 400s (INVALID_JSON, ...) for this body-less endpoint.
    running = insert_running_job(engine, gateway.client_id)
    no_hooks = insert_finished_job(engine, gateway.client_id, make_lots(1), ["en"])
    codes = [_redeliver(gateway, job_id).json() for job_id in (running, no_hooks)]
    assert [(body["code"]) for body in codes] == ["JOB_NOT_FINISHED", "NO_WEBHOOK"]
    described = documented("post", REDELIVER, 400)
    assert all(body["code"] in described for body in codes) and "INVALID_JSON" not in described


def test_a_redelivery_retried_with_its_idempotency_key_is_replayed_not_sent_twice(
        gateway: Gateway, engine: Engine) -> None:
    # A client whose 202 was lost retried: it heard 429 "retry in 600 s", never learned its
    # redelivery_id, and a retrier honouring Retry-After sent every URL of the job a second time.
    job_id = _finished_with_webhooks(engine, gateway)
    key = {"X-Signature": gateway.sign(job_id), "Idempotency-Key": "redeliver-7"}
    url = f"{gateway.url}{REDELIVER.format(job_id=job_id)}"
    first = httpx2.post(url, headers=key, timeout=30)
    again = httpx2.post(url, headers=key, timeout=30)
    assert first.status_code == again.status_code == 202, again.text
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = _finished_with_webhooks(engine, gateway)  # the key names one request: not another job's
    same_key = {"X-Signature": gateway.sign(other), "Idempotency-Key": "redeliver-7"}
    reused = httpx2.post(f"{gateway.url}{REDELIVER.format(job_id=other)}", headers=same_key, timeout=30)
    assert reused.status_code == 409 and reused.json()["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_a_redelivery_right_after_a_cancel_waits_until_the_read_models_show_the_job_ended(
        gateway: Gateway, engine: Engine) -> None:
    # The gateway accepted it as soon as its own outbox said `cancelled`; the dispatcher then held
    # its consumer, every client's webhooks with it, until result-store projected the cancel.
    job_id = insert_running_job(engine, gateway.client_id)
    with engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.job_id == job_id).values(webhook_configured=True))
    assert gateway.cancel(job_id).status_code == 200
    early = _redeliver(gateway, job_id)
    assert early.status_code == 409, early.text
    body = early.json()
    assert set(body) == {"error", "message", "code", "details"} and body["code"] == "JOB_ENDING"
    assert body["details"] == {"job_id": job_id, "status": "cancelled"}
    assert 1 <= int(early.headers["retry-after"]) <= 10
    assert "JOB_ENDING" in documented("post", REDELIVER, 409)
    with engine.connect() as conn:  # a refused request records nothing
        assert conn.execute(select(func.count()).select_from(outbox).where(
            outbox.c.job_id == job_id, outbox.c.event_type == "WebhookRedeliveryRequested")).scalar_one() == 0
    with engine.begin() as conn:  # result-store projects the cancel
        conn.execute(update(jobs).where(jobs.c.job_id == job_id).values(
            status="cancelled", cancelled_at=datetime.now(UTC)))
    assert _redeliver(gateway, job_id).status_code == 202


def test_a_redelivery_stays_in_its_window_whatever_the_outbox_retention(
        settings: ServiceSettings, engine: Engine) -> None:
    # The window is counted from the outbox rows, and the relay pruned them by
    # LOTLENS_OUTBOX_RETENTION_S alone: at 300 s a job's webhooks could be sent again every 5
    # minutes, and a client's cap of 10 jobs counted only the last 5 minutes' requests.
    with running_gateway(settings, engine, outbox_retention_s=300) as gw:
        job_id = _finished_with_webhooks(engine, gw)
        assert _redeliver(gw, job_id).status_code == 202
        wait_published(gw, engine, job_id)
        with engine.begin() as conn:  # as if 400 s had passed: past the retention, inside the window
            conn.execute(update(outbox).where(outbox.c.job_id == job_id).values(
                created_at=outbox.c.created_at - timedelta(seconds=400),
                published_at=outbox.c.published_at - timedelta(seconds=400)))
        gw.deps.relay.prune()
        again = _redeliver(gw, job_id)
    assert again.status_code == 429, again.text
    assert again.json()["details"]["reason"] == "redelivered_recently"
    assert 1 <= int(again.headers["retry-after"]) <= 200
