"""An attempt's secrets are read before its POST's mark, where PostgreSQL's refusal hands the claim
back unspent. After the mark nothing can hand it back, so nothing there reads PostgreSQL: the mark
itself returns the client's secrets when they changed since that read (a rotation), and the
attempt is signed with them and sent; with those read before the mark otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import standardwebhooks
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from lotlens_common import webhook_secrets
from lotlens_common.clock import utc_now
from lotlens_common.events import WebhookAttempted
from lotlens_webhook_dispatcher import dispatch_queue, worker
from lotlens_webhook_dispatcher.claims import Room, claim
from lotlens_webhook_dispatcher.dispatch_queue import Delivery
from lotlens_webhook_dispatcher.payloads import PartPlan
from lotlens_webhook_dispatcher.post_marks import Held, PostMarks
from lotlens_webhook_dispatcher.secrets_cache import SecretsCache
from tests.conftest import new_id
from tests.integration.webhook_dispatcher.support import (
    CLIENT,
    dispatcher_settings,
    of,
    one_webhook,
    state,
)
from tests.integration.webhook_dispatcher.support import running as running_dispatcher

pytestmark = pytest.mark.integration

CACHED_S = 0.05  # runs out while the mark is written
MARK_S = 0.1


class RefusesAfterTheFirstRead:
    """The secrets cache's engine: PostgreSQL answers its first read, then is gone (a failover,
    a pool timeout)."""

    def __init__(self, engine: Engine, refuses: bool) -> None:
        self._engine, self._refuses = engine, refuses
        self.reads = 0

    def connect(self) -> Connection:
        self.reads += 1
        if self._refuses and self.reads > 1:
            raise OperationalError("SELECT client_webhook_secrets.secret …", {},
                                   Exception("server closed the connection unexpectedly (test)"))
        return self._engine.connect()


def slow_marks(meanwhile: Callable[[], None]) -> type[PostMarks]:
    """Marks that take `MARK_S` (a shared write waited on), `meanwhile` happening during it."""

    class SlowMarks(PostMarks):
        def mark(self, delivery: Delivery, version_known: datetime | None = None) -> Held | None:
            time.sleep(MARK_S)
            meanwhile()
            return super().mark(delivery, version_known)

    return SlowMarks


def rotated(db: Engine, made: list[str]) -> Callable[[], None]:
    def rotate() -> None:
        with db.begin() as conn:
            made.append(webhook_secrets.rotate(conn, CLIENT, timedelta(0), datetime.now(UTC)))
    return rotate


def deleted(db: Engine) -> Callable[[], None]:
    def delete() -> None:
        with db.begin() as conn:
            webhook_secrets.delete_client(conn, CLIENT)
    return delete


@pytest.mark.parametrize(("during_the_mark", "refuses"), [
    ("nothing", True),  # the cached secrets' time ran out, PostgreSQL gone
    ("rotate", True),  # `clients rotate --overlap-hours 0`, PostgreSQL gone
    ("delete", False),  # `clients delete`, landing between the secrets' read and the mark
])
def test_an_attempt_marked_as_posting_is_sent_whatever_the_secrets_read_after_the_mark_meets(
        config, db, events, monkeypatch, during_the_mark, refuses):
    # A secrets read after the mark that failed spent the attempt unsent ("not sent: signing:
    # OperationalError…", a failed attempt of five): the integrator lost an attempt and its
    # history showed a failure that never reached it. Read again after the mark, a rotation met by
    # PostgreSQL's refusal signed that POST with the old secret alone: a receiver switched to the
    # new one refused it, an attempt of five spent.
    made: list[str] = []
    actions: dict[str, Callable[[], None]] = {
        "nothing": lambda: None, "rotate": rotated(db, made), "delete": deleted(db)}
    engines: list[RefusesAfterTheFirstRead] = []

    def secrets_cache(engine: Engine, ttl_s: float, clock: Any) -> SecretsCache:
        engines.append(RefusesAfterTheFirstRead(engine, refuses))
        return SecretsCache(engines[-1], ttl_s, clock)  # type: ignore[arg-type]

    monkeypatch.setattr(worker, "SecretsCache", secrets_cache)
    monkeypatch.setattr(worker, "PostMarks", slow_marks(actions[during_the_mark]))
    settings = dispatcher_settings(config, new_id("g-"), webhook_secrets_cache_s=CACHED_S,
                                   webhook_retry_intervals_s=(60.0,))
    with one_webhook(db, "/marked") as (hooks, url, job_id):
        with db.connect() as conn:
            [read_before] = webhook_secrets.live(conn, CLIENT, utc_now())
        with running_dispatcher(settings, db):
            with db.begin() as conn:
                dispatch_queue.schedule(conn, job_id, CLIENT, {url: [PartPlan()]}, utc_now())
            seen = events.until(lambda seen: bool(of(WebhookAttempted, seen, url)))
    [attempted] = of(WebhookAttempted, seen, url)
    assert attempted.succeeded, attempted.error
    [posted] = hooks.on("/marked")
    if during_the_mark == "rotate":  # the new secret alone (no overlap), as the mark read it
        [new] = made
        standardwebhooks.Webhook(new).verify(posted.body, posted.headers)
        assert len(posted.headers["webhook-signature"].split(" ")) == 1
    else:  # unchanged, or deleted as the POST started: those read before the mark
        standardwebhooks.Webhook(read_before).verify(posted.body, posted.headers)
    assert state(db, job_id) == [("delivered", 1, 0)]
    # Never read after the mark: the mark's statement brought what signing needs.
    assert [engine.reads for engine in engines] == [1]


def test_the_mark_returns_the_secrets_only_to_an_attempt_that_read_another_version(db):
    # Each mark's row brings its client's live secrets when the attempt read another version
    # (or none), so nothing is read after the mark; an attempt that read the current version
    # gets nothing more, which keeps the mark, written for every attempt, as cheap as before.
    client = new_id("client-")
    with db.begin() as conn:
        webhook_secrets.ensure(conn, [client])
        before = webhook_secrets.signing(conn, client, utc_now())
        new = webhook_secrets.rotate(conn, client, timedelta(hours=24), utc_now())
        current = webhook_secrets.signing(conn, client, utc_now())
    urls = [f"http://127.0.0.1:9/{name}" for name in ("current", "before", "none")]
    with db.begin() as conn:
        dispatch_queue.schedule(conn, new_id("job-"), client, {url: [PartPlan()] for url in urls}, utc_now())
        claimed = {d.webhook_url.rsplit("/", 1)[1]: d for d in claim(conn, utc_now(), Room(3, 3, 3), 60.0)}
    known = {claimed["current"].delivery_id: current.version, claimed["before"].delivery_id: before.version}
    with db.begin() as conn:
        marked = dispatch_queue.mark_posting(conn, list(claimed.values()), utc_now(), 60.0, known)
    assert marked[claimed["current"].delivery_id] is None
    for name in ("before", "none"):
        assert marked[claimed[name].delivery_id] == current
    # Both sign during the overlap, the new one first: one `v1,` signature each.
    assert current.live(utc_now()) == [new, *before.live(utc_now())]
