"""The result-store's projections of the webhook dispatcher's events, driven through its batch
handler with envelopes: every attempt recorded, a delivery's final status, and the same rows
however the events were batched (live, or in a rebuild)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from lotlens_common.envelope import Envelope
from lotlens_common.events import WebhookAttempted, WebhookDelivered, WebhookFailed
from lotlens_common.tables import webhook_attempts, webhook_deliveries
from tests.conftest import new_id
from tests.integration.result_store.support import HOOK, Apply

pytestmark = pytest.mark.integration


def test_webhook_events_record_every_attempt_and_the_final_status(engine: Engine, apply: Apply) -> None:
    job_id, client = new_id("job-"), new_id("client-")
    delivered_id, failed_id = new_id("dlv-"), new_id("dlv-")
    t0 = datetime(2026, 3, 1, tzinfo=UTC)

    def attempt(delivery_id: str, n: int, ok: bool) -> Envelope:
        return Envelope(client_id=client, event=WebhookAttempted(
            job_id=job_id, delivery_id=delivery_id, webhook_url=HOOK, attempt=n,
            attempted_at=t0 + timedelta(seconds=30 * n), succeeded=ok, status_code=200 if ok else 500,
            latency_ms=12.5, error=None if ok else "HTTP 500", response_body="ok" if ok else "boom",
            next_attempt_at=None if ok else t0 + timedelta(seconds=30 * (n + 1))))

    delivered = Envelope(client_id=client, event=WebhookDelivered(
        job_id=job_id, delivery_id=delivered_id, webhook_url=HOOK, attempts=2,
        delivered_at=t0 + timedelta(seconds=60)))
    failed = Envelope(client_id=client, event=WebhookFailed(
        job_id=job_id, delivery_id=failed_id, webhook_url=HOOK, attempts=5,
        failed_at=t0 + timedelta(seconds=150), error="HTTP 500"))
    apply([attempt(delivered_id, 1, False), attempt(delivered_id, 2, True), delivered])
    apply([attempt(failed_id, n, False) for n in range(1, 6)] + [failed])
    # Duplicates and a late first attempt change nothing.
    apply([attempt(delivered_id, 1, False), delivered, attempt(failed_id, 3, False), failed])

    with engine.connect() as conn:
        rows = {row["id"]: row for row in conn.execute(
            select(webhook_deliveries).where(webhook_deliveries.c.batch_job_id == job_id)).mappings()}
        attempts = conn.execute(select(func.count()).select_from(webhook_attempts).where(
            webhook_attempts.c.delivery_id.in_([delivered_id, failed_id]))).scalar_one()
    ok, given_up = rows[delivered_id], rows[failed_id]
    assert (ok["status"], ok["attempt_count"], ok["last_status_code"]) == ("delivered", 2, 200)
    assert ok["delivered_at"] == t0 + timedelta(seconds=60)
    assert ok["error_message"] is None and ok["next_attempt_at"] is None
    assert ok["created_at"] == t0 + timedelta(seconds=30)
    assert (given_up["status"], given_up["attempt_count"]) == ("failed", 5)
    assert given_up["error_message"] == "HTTP 500"
    assert given_up["last_attempt_at"] == t0 + timedelta(seconds=150)
    assert given_up["next_attempt_at"] is None and given_up["delivered_at"] is None
    assert attempts == 7


def test_a_deliverys_first_attempt_dates_it_however_its_attempts_are_batched(
        engine: Engine, apply: Apply) -> None:
    # Only a batch's newest attempt of a delivery was written, so a delivery whose two attempts
    # came in one batch was dated by the second: live and rebuilt read models differed.
    job_id, together, apart = new_id("job-"), new_id("dlv-"), new_id("dlv-")
    t0 = datetime(2026, 3, 2, tzinfo=UTC)

    def attempt(delivery_id: str, n: int) -> Envelope:
        return Envelope(client_id="c", event=WebhookAttempted(
            job_id=job_id, delivery_id=delivery_id, webhook_url=HOOK, attempt=n,
            attempted_at=t0 + timedelta(minutes=n - 1), succeeded=False, status_code=503,
            latency_ms=12.5, error="HTTP 503", next_attempt_at=t0 + timedelta(minutes=n)))

    apply([attempt(together, 1), attempt(together, 2)])
    apply([attempt(apart, 1)])
    apply([attempt(apart, 2)])
    with engine.connect() as conn:
        dated = dict(conn.execute(select(webhook_deliveries.c.id, webhook_deliveries.c.created_at)
                                  .where(webhook_deliveries.c.batch_job_id == job_id)).all())
    assert dated == {together: t0, apart: t0}


def test_an_attempt_published_twice_reads_alike_in_one_batch_or_two(engine: Engine, apply: Apply) -> None:
    # A dispatcher killed between publishing attempt 1 and recording it publishes it again as
    # `interrupted`, later. Across batches the first copy stayed (DO NOTHING, `least`); in one batch
    # the last copy won: a rebuild and the live store disagreed.
    job_id, together, apart = new_id("job-"), new_id("dlv-"), new_id("dlv-")
    t0 = datetime(2026, 3, 2, tzinfo=UTC)

    sent = ((t0, 503, "HTTP 503"), (t0 + timedelta(seconds=20), None, "interrupted"))

    def copies(delivery_id: str) -> list[Envelope]:
        return [Envelope(client_id="c", event=WebhookAttempted(
            job_id=job_id, delivery_id=delivery_id, webhook_url=HOOK, attempt=1, attempted_at=at,
            succeeded=False, status_code=status, latency_ms=12.5, error=error, next_attempt_at=None))
            for at, status, error in sent]

    apply(copies(together))
    first, second = copies(apart)
    apply([first])
    apply([second])
    with engine.connect() as conn:
        dated = dict(conn.execute(select(webhook_deliveries.c.id, webhook_deliveries.c.created_at)
                                  .where(webhook_deliveries.c.batch_job_id == job_id)).all())
        errors = dict(conn.execute(select(webhook_attempts.c.delivery_id, webhook_attempts.c.error)
                                   .where(webhook_attempts.c.delivery_id.in_([together, apart]))).all())
    assert dated == {together: t0, apart: t0}
    assert errors == {together: "HTTP 503", apart: "HTTP 503"}


def test_a_late_attempt_never_reopens_a_delivered_webhook(engine: Engine, apply: Apply) -> None:
    job_id, delivery_id = new_id("job-"), new_id("dlv-")
    at = datetime(2026, 3, 1, tzinfo=UTC)
    apply([Envelope(client_id="c", event=WebhookDelivered(
        job_id=job_id, delivery_id=delivery_id, webhook_url=HOOK, attempts=1, delivered_at=at))])
    apply([Envelope(client_id="c", event=WebhookFailed(
        job_id=job_id, delivery_id=delivery_id, webhook_url=HOOK, attempts=1, failed_at=at, error="late")),
        Envelope(client_id="c", event=WebhookAttempted(
            job_id=job_id, delivery_id=delivery_id, webhook_url=HOOK, attempt=1, attempted_at=at,
            succeeded=True, status_code=200, next_attempt_at=at))])
    with engine.connect() as conn:
        row = conn.execute(select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
                           ).mappings().one()
    assert (row["status"], row["attempt_count"], row["next_attempt_at"]) == ("delivered", 1, None)
