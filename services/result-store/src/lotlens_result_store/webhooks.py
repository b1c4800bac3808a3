"""Projections of the webhook dispatcher's events onto `webhook_deliveries` and `webhook_attempts`.

A delivery's status moves `pending → failed → delivered` and never back: a late or duplicated
attempt can raise `attempt_count` but cannot reopen a final delivery, and the "last attempt"
columns only follow an attempt at least as recent as the one they show. A success after a
give-up (a manual redelivery) is the stronger fact, so `delivered` may follow `failed`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, text

from lotlens_common.envelope import Envelope
from lotlens_common.events import WebhookAttempted, WebhookDelivered, WebhookFailed
from lotlens_result_store.changes import JobChanges
from lotlens_result_store.grouping import latest_events
from lotlens_result_store.metrics import execute

INSERT_ATTEMPTS = text("""
INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, succeeded, status_code, latency_ms,
                              error, response_body)
SELECT * FROM unnest(CAST(:delivery_ids AS text[]), CAST(:attempts AS int[]),
                     CAST(:attempted AS timestamptz[]), CAST(:succeeded AS boolean[]),
                     CAST(:status_codes AS int[]), CAST(:latencies AS float8[]), CAST(:errors AS text[]),
                     CAST(:bodies AS text[]))
ON CONFLICT DO NOTHING
""")

_NEWER = "excluded.attempt_count >= d.attempt_count"
UPSERT_ATTEMPTED = text(f"""
INSERT INTO webhook_deliveries AS d (id, batch_job_id, webhook_url, status, attempt_count, created_at,
                                     last_attempt_at, last_status_code, last_latency_ms, error_message,
                                     next_attempt_at)
SELECT v.id, v.job_id, v.url, 'pending', v.attempt, v.attempted_at, v.attempted_at, v.status_code,
       v.latency_ms, v.error, v.next_attempt_at
FROM unnest(CAST(:delivery_ids AS text[]), CAST(:job_ids AS text[]), CAST(:urls AS text[]),
            CAST(:attempts AS int[]), CAST(:attempted AS timestamptz[]), CAST(:status_codes AS int[]),
            CAST(:latencies AS float8[]), CAST(:errors AS text[]), CAST(:next AS timestamptz[]))
     AS v(id, job_id, url, attempt, attempted_at, status_code, latency_ms, error, next_attempt_at)
ON CONFLICT (id) DO UPDATE SET
    attempt_count = greatest(d.attempt_count, excluded.attempt_count),
    created_at = least(d.created_at, excluded.created_at),
    last_attempt_at = CASE WHEN {_NEWER} THEN excluded.last_attempt_at ELSE d.last_attempt_at END,
    last_status_code = CASE WHEN {_NEWER} THEN excluded.last_status_code ELSE d.last_status_code END,
    last_latency_ms = CASE WHEN {_NEWER} THEN excluded.last_latency_ms ELSE d.last_latency_ms END,
    error_message = CASE WHEN {_NEWER} THEN excluded.error_message ELSE d.error_message END,
    next_attempt_at = CASE WHEN d.status <> 'pending' THEN NULL
                           WHEN {_NEWER} THEN excluded.next_attempt_at ELSE d.next_attempt_at END
""")

UPSERT_DELIVERED = text("""
INSERT INTO webhook_deliveries AS d (id, batch_job_id, webhook_url, status, attempt_count, created_at,
                                     delivered_at)
SELECT v.id, v.job_id, v.url, 'delivered', v.attempts, v.delivered_at, v.delivered_at
FROM unnest(CAST(:delivery_ids AS text[]), CAST(:job_ids AS text[]), CAST(:urls AS text[]),
            CAST(:attempts AS int[]), CAST(:times AS timestamptz[]))
     AS v(id, job_id, url, attempts, delivered_at)
ON CONFLICT (id) DO UPDATE SET
    status = 'delivered', delivered_at = coalesce(d.delivered_at, excluded.delivered_at),
    attempt_count = greatest(d.attempt_count, excluded.attempt_count), next_attempt_at = NULL
""")

UPSERT_FAILED = text("""
INSERT INTO webhook_deliveries AS d (id, batch_job_id, webhook_url, status, attempt_count, created_at,
                                     error_message)
SELECT v.id, v.job_id, v.url, 'failed', v.attempts, v.failed_at, v.error
FROM unnest(CAST(:delivery_ids AS text[]), CAST(:job_ids AS text[]), CAST(:urls AS text[]),
            CAST(:attempts AS int[]), CAST(:times AS timestamptz[]), CAST(:errors AS text[]))
     AS v(id, job_id, url, attempts, failed_at, error)
ON CONFLICT (id) DO UPDATE SET
    status = CASE WHEN d.status = 'delivered' THEN d.status ELSE 'failed' END,
    error_message = CASE WHEN d.status = 'delivered' THEN d.error_message ELSE excluded.error_message END,
    attempt_count = greatest(d.attempt_count, excluded.attempt_count), next_attempt_at = NULL
""")


def project_attempted(conn: Connection, envelopes: Sequence[Envelope], _changes: JobChanges) -> None:
    """Record every attempt, and the newest one on its delivery."""
    every = latest_events(envelopes, WebhookAttempted, lambda e: (e.delivery_id, e.attempt))
    newest: dict[str, WebhookAttempted] = {}
    for event in every:
        if event.delivery_id not in newest or event.attempt >= newest[event.delivery_id].attempt:
            newest[event.delivery_id] = event
    execute(conn, "insert_webhook_attempts", INSERT_ATTEMPTS, {
        "delivery_ids": [e.delivery_id for e in every], "attempts": [e.attempt for e in every],
        "attempted": [e.attempted_at for e in every], "succeeded": [e.succeeded for e in every],
        "status_codes": [e.status_code for e in every], "latencies": [e.latency_ms for e in every],
        "errors": [e.error for e in every], "bodies": [e.response_body for e in every],
    })
    latest = list(newest.values())
    execute(conn, "upsert_webhook_deliveries", UPSERT_ATTEMPTED, {
        "delivery_ids": [e.delivery_id for e in latest], "job_ids": [e.job_id for e in latest],
        "urls": [e.webhook_url for e in latest], "attempts": [e.attempt for e in latest],
        "attempted": [e.attempted_at for e in latest], "status_codes": [e.status_code for e in latest],
        "latencies": [e.latency_ms for e in latest], "errors": [e.error for e in latest],
        "next": [e.next_attempt_at for e in latest],
    })


def project_delivered(conn: Connection, envelopes: Sequence[Envelope], _changes: JobChanges) -> None:
    """Mark deliveries delivered (final)."""
    delivered = latest_events(envelopes, WebhookDelivered, lambda e: (e.delivery_id,))
    execute(conn, "upsert_webhook_deliveries", UPSERT_DELIVERED, {
        "delivery_ids": [e.delivery_id for e in delivered], "job_ids": [e.job_id for e in delivered],
        "urls": [e.webhook_url for e in delivered], "attempts": [e.attempts for e in delivered],
        "times": [e.delivered_at for e in delivered],
    })


def project_failed(conn: Connection, envelopes: Sequence[Envelope], _changes: JobChanges) -> None:
    """Mark deliveries failed, unless one was delivered after all."""
    failed = latest_events(envelopes, WebhookFailed, lambda e: (e.delivery_id,))
    execute(conn, "upsert_webhook_deliveries", UPSERT_FAILED, {
        "delivery_ids": [e.delivery_id for e in failed], "job_ids": [e.job_id for e in failed],
        "urls": [e.webhook_url for e in failed], "attempts": [e.attempts for e in failed],
        "times": [e.failed_at for e in failed], "errors": [e.error for e in failed],
    })

