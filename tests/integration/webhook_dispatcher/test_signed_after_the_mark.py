"""A webhook's `webhook-timestamp` is the moment its POST goes out, however long the attempt
waited for its mark (a shared database write, up to a statement_timeout of 300 s)."""

from __future__ import annotations

import binascii
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest

from lotlens_common import signing
from lotlens_common.events import WebhookAttempted, WebhookFailed
from lotlens_common.producer import EventProducer
from lotlens_webhook_dispatcher import dispatch_queue
from lotlens_webhook_dispatcher.bootstrap import http_transport
from lotlens_webhook_dispatcher.claims import Room, claim
from lotlens_webhook_dispatcher.dispatch_queue import Delivery
from lotlens_webhook_dispatcher.payloads import PartPlan
from lotlens_webhook_dispatcher.post_marks import Held, PostMarks
from lotlens_webhook_dispatcher.worker import Dispatcher
from tests.integration.webhook_dispatcher.support import (
    CLIENT,
    Reply,
    Request,
    finals,
    of,
    one_webhook,
    publish_completed,
    quick,
    running,
    state,
)

pytestmark = pytest.mark.integration

# The official `standardwebhooks` verifier refuses a timestamp more than this off its clock.
TOLERANCE_S = 300


class Clock:
    """Now, moved on by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class SlowMarks(PostMarks):
    """Marks written after a wait on the shared write: six minutes pass first."""

    def __init__(self, clock: Clock, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._waited = clock

    def mark(self, delivery: Delivery, version_known: datetime | None = None) -> Held | None:
        self._waited.now += timedelta(minutes=6)
        return super().mark(delivery, version_known)


def test_a_webhook_is_signed_with_the_time_its_post_goes_out_not_before_its_mark(config, db):
    # The timestamp was fixed before the mark: an attempt whose mark waited past 5 minutes went
    # out signed as too old, and every receiver verifying with `standardwebhooks` refused it.
    clock = Clock()
    posted_at: list[datetime] = []

    def note_the_post(_request: Request) -> Reply:
        posted_at.append(clock())
        return Reply(200)

    settings = quick(config)
    with one_webhook(db, "/slow-mark") as (hooks, url, job_id):
        hooks.respond = note_the_post
        with db.begin() as conn:
            dispatch_queue.schedule(conn, job_id, CLIENT, {url: [PartPlan()]}, clock())
            [delivery] = claim(conn, clock(), Room(1, 4, 4), lease_s=60.0)
        dispatcher = Dispatcher(db, EventProducer(settings.kafka, "dispatcher"),
                                partial(http_transport, settings), settings, clock=clock)
        dispatcher._post_marks = SlowMarks(clock, db, settings.lease_s, clock)
        dispatcher.attempt(delivery)
    [request] = hooks.on("/slow-mark")
    signed_at = int(request.headers["webhook-timestamp"])
    assert abs(posted_at[0].timestamp() - signed_at) < TOLERANCE_S, (
        f"signed {posted_at[0].timestamp() - signed_at:.0f} s before its POST")


def test_a_signing_error_fails_the_attempt_unsent_with_its_reason_not_as_an_interruption(
        config, db, events, monkeypatch):
    # Signed after the mark, a signing error (a malformed `whsec_` secret) escaped the attempt as
    # one that broke in its POST and may have been sent: left to its lease, it was taken up again
    # as interrupted until given up, where nothing was sent and the reason is known.
    def malformed(*_args: Any, **_kwargs: Any) -> str:
        raise binascii.Error("Invalid base64-encoded string (test)")

    monkeypatch.setattr(signing, "standard_webhook_signature", malformed)
    with one_webhook(db, "/unsignable") as (hooks, url, job_id), running(quick(config), db):
        publish_completed(config, job_id)
        seen = events.until(lambda seen: bool(finals(seen)), timeout_s=60)
    assert hooks.on("/unsignable") == []
    [failed] = of(WebhookFailed, seen)
    assert "not sent: signing: Error: Invalid base64-encoded string (test)" in str(failed.error), failed
    attempts = [(e.attempt, e.succeeded) for e in of(WebhookAttempted, seen, url)]
    assert attempts == [(n, False) for n in range(1, 6)]
    assert state(db, job_id) == [("failed", 5, 0)]
