"""An attempt's secrets are read before its POST's mark, where PostgreSQL's refusal hands the claim
back unspent. After the mark nothing can hand it back, so nothing there may fail on PostgreSQL:
the attempt is signed and sent, with the secrets read before the mark unless the mark saw them
change and they could be read again."""

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
        def mark(self, delivery: Delivery) -> Held | None:
            time.sleep(MARK_S)
            meanwhile()
            return super().mark(delivery)

    return SlowMarks


def rotated(db: Engine) -> Callable[[], None]:
    def rotate() -> None:
        with db.begin() as conn:
            webhook_secrets.rotate(conn, CLIENT, timedelta(0), datetime.now(UTC))
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
    # history showed a failure that never reached it.
    actions: dict[str, Callable[[], None]] = {
        "nothing": lambda: None, "rotate": rotated(db), "delete": deleted(db)}
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
    standardwebhooks.Webhook(read_before).verify(posted.body, posted.headers)
    assert state(db, job_id) == [("delivered", 1, 0)]
    # Read again after the mark only when the mark saw them change.
    assert [engine.reads for engine in engines] == [1 if during_the_mark == "nothing" else 2]
