"""`lotlens-admin clients rotate` reaches a running dispatcher's next webhook, however long it
caches the secrets: an integrator who switches its receiver to the new secret at once (the
official `standardwebhooks` package) accepts it, and after a rotation without overlap the old
secret signs nothing more. The cache still spares PostgreSQL a read per delivery."""

from __future__ import annotations

import threading

import pytest
import standardwebhooks
from sqlalchemy import Engine, event

from lotlens_common.clock import utc_now
from lotlens_common.events import WebhookAttempted
from lotlens_common.settings import ServiceSettings
from lotlens_webhook_dispatcher import dispatch_queue
from lotlens_webhook_dispatcher.payloads import PartPlan
from tests.conftest import new_id
from tests.integration.admin_support import admin_env, run_admin
from tests.integration.webhook_dispatcher.support import (
    CLIENT,
    Reply,
    Request,
    WebhookEvents,
    client_secret,
    dispatcher_settings,
    insert_finished_job,
    of,
    receiver,
    running,
)

pytestmark = pytest.mark.integration

# Far longer than the test: a rotation must reach deliveries through the cache, not by its expiry.
CACHED_S = 600.0


class Integrator:
    """A receiver's verification: `standardwebhooks` with the secret the integrator configured
    (401 when it does not verify, as its README's handler would answer)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.refused: list[Request] = []

    def respond(self, request: Request) -> Reply:
        try:
            standardwebhooks.Webhook(self.secret).verify(request.body, request.headers)
        except standardwebhooks.WebhookVerificationError:
            self.refused.append(request)
            return Reply(401)
        return Reply(200)


def deliver(db: Engine, events: WebhookEvents, base_url: str, path: str) -> WebhookAttempted:
    """One webhook scheduled straight into the queue (sent within a poll): its first attempt."""
    url = f"{base_url}{path}"
    job_id = insert_finished_job(db, [url])
    with db.begin() as conn:
        dispatch_queue.schedule(conn, job_id, CLIENT, {url: [PartPlan()]}, utc_now())
    seen = events.until(lambda seen: bool(of(WebhookAttempted, seen, url)))
    [attempted] = of(WebhookAttempted, seen, url)
    assert isinstance(attempted, WebhookAttempted)
    return attempted


def rotate(config: ServiceSettings, overlap_hours: str) -> str:
    """`lotlens-admin clients rotate` as the operator runs it: the new secret it prints."""
    done = run_admin(admin_env(config.kafka.bootstrap_servers, config.database.database_url),
                     "clients", "rotate", CLIENT, "--overlap-hours", overlap_hours)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("overlap_hours", ["0", "24"])
def test_a_receiver_switched_to_the_rotated_secret_at_once_accepts_the_next_webhook(
        config, db, events, overlap_hours):
    old = client_secret(db)
    integrator = Integrator(old)
    settings = dispatcher_settings(config, new_id("g-"), webhook_secrets_cache_s=CACHED_S,
                                   webhook_retry_intervals_s=(60.0,))
    with receiver(integrator.respond) as hooks, running(settings, db):
        assert deliver(db, events, hooks.url, "/before").succeeded  # the secrets are cached now
        integrator.secret = rotate(config, overlap_hours)
        after_attempt = deliver(db, events, hooks.url, "/after")
    assert [request.path for request in integrator.refused] == []
    assert after_attempt.succeeded
    [after] = hooks.on("/after")
    signatures = after.headers["webhook-signature"].split(" ")
    if overlap_hours == "0":  # the old secret stopped at once
        assert len(signatures) == 1
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(old).verify(after.body, after.headers)
    else:  # both sign during the overlap, the new one first
        assert len(signatures) == 2
        standardwebhooks.Webhook(old).verify(after.body, after.headers)


def test_deliveries_without_a_rotation_read_the_secrets_once(config, db, events):
    client_secret(db)
    reads: list[str] = []
    lock = threading.Lock()

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        # A read of the secrets alone (the POST marks carry a check of their version).
        if statement.lstrip().startswith("SELECT") and "client_webhook_secrets" in statement:
            with lock:
                reads.append(statement)

    settings = dispatcher_settings(config, new_id("g-"), webhook_secrets_cache_s=CACHED_S)
    event.listen(db, "before_cursor_execute", count)
    try:
        with receiver(lambda _r: Reply(200)) as hooks, running(settings, db):
            for n in range(10):
                assert deliver(db, events, hooks.url, f"/hook-{n}").succeeded
    finally:
        event.remove(db, "before_cursor_execute", count)
    assert len(reads) == 1, reads
