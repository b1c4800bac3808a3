"""Real deliveries verified the Standard Webhooks way: the official `standardwebhooks` package
exactly as its README shows (`Webhook(secret).verify(body, headers)`) and the SDK's verifier,
with the client's `whsec_` secret, through a secret rotation and its overlap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks
from sqlalchemy import Engine

from lotlens_client import verify_standard_webhook, verify_webhook
from lotlens_common import webhook_secrets
from lotlens_common.clock import utc_now
from lotlens_common.events import WebhookDelivered
from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.relay import Relay, RelaySettings
from lotlens_webhook_dispatcher import dispatch_queue
from lotlens_webhook_dispatcher.payloads import PartPlan
from tests.conftest import new_id
from tests.integration.webhook_dispatcher.support import (
    CLIENT,
    KEY,
    Reply,
    WebhookEvents,
    attempts_not_started,
    client_secret,
    dispatcher_settings,
    insert_finished_job,
    of,
    publish_completed,
    receiver,
    running,
)
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def deliver_one(config: ServiceSettings, db: Engine, events: WebhookEvents) -> tuple[bytes, dict[str, str]]:
    """One job's webhook through the dispatcher to a local receiver: the body and headers it got."""
    with receiver(lambda _r: Reply(200)) as hooks:
        job_id = insert_finished_job(db, [f"{hooks.url}/hook", f"{hooks.url}/hook"])
        publish_completed(config, job_id)
        with running(dispatcher_settings(config, new_id("g-")), db):
            events.until(lambda seen: any(e.job_id == job_id for e in of(WebhookDelivered, seen)))
    (request,) = hooks.arrived
    return request.body, request.headers


def test_a_delivery_verifies_with_the_official_package_and_the_sdk(config, db, events):
    secret = client_secret(db)
    body, headers = deliver_one(config, db, events)
    assert secret.startswith("whsec_")
    wh = standardwebhooks.Webhook(secret)
    payload = wh.verify(body, headers)
    assert payload["event"] == "batch_job_completed"
    assert verify_standard_webhook(body, headers, secret)
    assert verify_webhook(body, headers["x-signature"], KEY)  # 003's scheme keeps the shared key
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(webhook_secrets.new_secret()).verify(body, headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(body.replace(b"completed", b"cancelled"), headers)


def test_during_a_rotation_both_secrets_sign_and_after_the_overlap_only_the_new_one(config, db, events):
    old = client_secret(db)
    with db.begin() as conn:
        new = webhook_secrets.rotate(conn, CLIENT, timedelta(hours=24), datetime.now(UTC))
    body, headers = deliver_one(config, db, events)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        standardwebhooks.Webhook(secret).verify(body, headers)
        assert verify_standard_webhook(body, headers, secret)

    with db.begin() as conn:  # the overlap ends: a rotation with none left cuts the old secrets
        newest = webhook_secrets.rotate(conn, CLIENT, timedelta(0), datetime.now(UTC))
    body, headers = deliver_one(config, db, events)
    assert len(headers["webhook-signature"].split(" ")) == 1
    standardwebhooks.Webhook(newest).verify(body, headers)
    for retired in (old, new):
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(retired).verify(body, headers)
        assert not verify_standard_webhook(body, headers, retired)


def test_a_secret_stops_signing_when_its_overlap_ends_though_the_cache_still_holds_it(config, db):
    # The cache kept a client's secrets for its whole period: a secret whose overlap ended
    # meanwhile went on signing until the next read (by default up to 10 s; here 10 minutes).
    old = client_secret(db)
    cached = dispatcher_settings(config, new_id("g-"), webhook_secrets_cache_s=600.0)
    with receiver(lambda _r: Reply(200)) as hooks, running(cached, db):
        with db.begin() as conn:
            new = webhook_secrets.rotate(conn, CLIENT, timedelta(seconds=3), utc_now())
        ends = utc_now() + timedelta(seconds=3)
        for path in ("during", "after"):
            url = f"{hooks.url}/{path}"
            job_id = insert_finished_job(db, [url])
            with db.begin() as conn:  # straight into the schedule: sent within a poll
                dispatch_queue.schedule(conn, job_id, CLIENT, {url: [PartPlan()]}, utc_now())
            def sent_once(on: str = f"/{path}") -> bool:
                return len(hooks.on(on)) == 1

            wait_for(sent_once, "the webhook sent once")
            wait_for(lambda: utc_now() > ends + timedelta(seconds=0.2), "the overlap to end")
    [during], [after] = hooks.on("/during"), hooks.on("/after")
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    standardwebhooks.Webhook(new).verify(after.body, after.headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(old).verify(after.body, after.headers)


def test_a_client_left_without_a_secret_gets_one_and_its_webhook_verifies(config, db, events):
    # The gateway made the secrets at start-up only: PostgreSQL down then, a client had none until
    # the next restart, and the dispatcher sent its webhooks without `webhook-signature`, which
    # the official package refuses ("Missing required headers").
    with receiver(lambda _r: Reply(200)) as hooks:
        job_id = insert_finished_job(db, [f"{hooks.url}/hook"])
        with db.begin() as conn:  # as a gateway that could not reach PostgreSQL at start-up left it
            webhook_secrets.delete_client(conn, CLIENT)
        with running(dispatcher_settings(config, new_id("g-")), db):
            before = attempts_not_started("no_secret")
            publish_completed(config, job_id)
            wait_for(lambda: hooks.arrived or attempts_not_started("no_secret") > before,
                     "a webhook, or an attempt handed back for want of a secret")
            assert [request.headers.get("webhook-signature") for request in hooks.arrived] == []
            # The gateway's periodic work (no topics to relay here): it makes the missing secret.
            periodic = RelaySettings(sweep_s=0.2, prune_every_s=0.2, clients=(CLIENT,))
            gateway = Relay(db, EventProducer(config.kafka, "gateway-test"), [], periodic, GatewayMetrics())
            gateway.start()
            try:
                events.until(lambda seen: any(e.job_id == job_id for e in of(WebhookDelivered, seen)))
            finally:
                gateway.stop(timeout_s=5)
    with db.connect() as conn:
        [secret] = webhook_secrets.live(conn, CLIENT, utc_now())
    # One delivery; a loaded run saw it arrive twice (delivery is at least once), under one
    # webhook-id, which receivers dedupe by: each copy verifies.
    assert hooks.arrived and len({request.headers.get("webhook-id") for request in hooks.arrived}) == 1
    for request in hooks.arrived:
        assert standardwebhooks.Webhook(secret).verify(request.body, request.headers)["event"] == (
            "batch_job_completed")
