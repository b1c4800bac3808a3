"""Projections of the webhook dispatcher's events onto `webhook_deliveries` and `webhook_attempts`.

A delivery's status moves `pending → failed → delivered` and never back: a late or duplicated
attempt can raise `attempt_count` but cannot reopen a final delivery, and the "last attempt"
columns only follow an attempt at least as recent as the one they show. A success after a
give-up (a manual redelivery) is the stronger fact, so `delivered` may follow `failed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, text

from lotlens_common.envelope import Envelope
from lotlens_common.events import WebhookAttempted, WebhookDelivered, WebhookFailed
from lotlens_common.row_sets import json_rows
from lotlens_result_store.changes import JobChanges
from lotlens_result_store.grouping import event_of, latest_events
from lotlens_result_store.metrics import execute

INSERT_ATTEMPTS = text("""
INSERT INTO webhook_attempts (delivery_id, attempt, attempted_at, succeeded, status_code, latency_ms,
                              error, response_body)
SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
              AS v(delivery_id text, attempt int, attempted_at timestamptz, succeeded boolean,
                   status_code int, latency_ms float8, error text, response_body text)
ON CONFLICT DO NOTHING
""")

_NEWER = "excluded.attempt_count >= d.attempt_count"
UPSERT_ATTEMPTED = text(f"""
INSERT INTO webhook_deliveries AS d (id, batch_job_id, webhook_url, status, attempt_count, created_at,
                                     last_attempt_at, last_status_code, last_latency_ms, error_message,
                                     next_attempt_at)
SELECT v.id, v.job_id, v.url, 'pending', v.attempt, v.first_attempted_at, v.attempted_at, v.status_code,
       v.latency_ms, v.error, v.next_attempt_at
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS v(id text, job_id text, url text, attempt int, first_attempted_at timestamptz,
          attempted_at timestamptz, status_code int, latency_ms float8, error text,
          next_attempt_at timestamptz)
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
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS v(id text, job_id text, url text, attempts int, delivered_at timestamptz)
ON CONFLICT (id) DO UPDATE SET
    status = 'delivered', delivered_at = coalesce(d.delivered_at, excluded.delivered_at),
    attempt_count = greatest(d.attempt_count, excluded.attempt_count), next_attempt_at = NULL
""")

UPSERT_FAILED = text("""
INSERT INTO webhook_deliveries AS d (id, batch_job_id, webhook_url, status, attempt_count, created_at,
                                     error_message)
SELECT v.id, v.job_id, v.url, 'failed', v.attempts, v.failed_at, v.error
FROM jsonb_to_recordset(CAST(:rows AS jsonb))
     AS v(id text, job_id text, url text, attempts int, failed_at timestamptz, error text)
ON CONFLICT (id) DO UPDATE SET
    status = CASE WHEN d.status = 'delivered' THEN d.status ELSE 'failed' END,
    error_message = CASE WHEN d.status = 'delivered' THEN d.error_message ELSE excluded.error_message END,
    attempt_count = greatest(d.attempt_count, excluded.attempt_count), next_attempt_at = NULL
""")


def project_attempted(conn: Connection, envelopes: Sequence[Envelope], _changes: JobChanges) -> None:
    """Record every attempt, and the newest one on its delivery.

    However a delivery's events were batched, live or in a rebuild, the outcome is the same: an
    attempt published twice (a dispatcher killed between publishing it and recording it sends it
    again as `interrupted`) keeps its first copy, as `ON CONFLICT DO NOTHING` does across batches,
    and the delivery is dated by the earliest copy of any attempt, as `least` does across batches.
    """
    events = [event_of(envelope, WebhookAttempted) for envelope in envelopes]
    first_copies: dict[tuple[str, int], WebhookAttempted] = {}
    first: dict[str, datetime] = {}
    for event in events:
        first_copies.setdefault((event.delivery_id, event.attempt), event)
        first[event.delivery_id] = min(first.get(event.delivery_id, event.attempted_at), event.attempted_at)
    every = [first_copies[key] for key in sorted(first_copies)]  # key order is lock order
    newest: dict[str, WebhookAttempted] = {}
    for event in latest_events(envelopes, WebhookAttempted, lambda e: (e.delivery_id, e.attempt)):
        if event.delivery_id not in newest or event.attempt >= newest[event.delivery_id].attempt:
            newest[event.delivery_id] = event
    execute(conn, "insert_webhook_attempts", INSERT_ATTEMPTS, {"rows": json_rows(
        {"delivery_id": e.delivery_id, "attempt": e.attempt, "attempted_at": e.attempted_at,
         "succeeded": e.succeeded, "status_code": e.status_code, "latency_ms": e.latency_ms,
         "error": e.error, "response_body": e.response_body} for e in every)})
    execute(conn, "upsert_webhook_deliveries", UPSERT_ATTEMPTED, {"rows": json_rows(
        {"id": e.delivery_id, "job_id": e.job_id, "url": e.webhook_url, "attempt": e.attempt,
         "first_attempted_at": first[e.delivery_id], "attempted_at": e.attempted_at,
         "status_code": e.status_code, "latency_ms": e.latency_ms,
         "error": e.error, "next_attempt_at": e.next_attempt_at} for e in newest.values())})


def project_delivered(conn: Connection, envelopes: Sequence[Envelope], _changes: JobChanges) -> None:
    """Mark deliveries delivered (final)."""
    delivered = latest_events(envelopes, WebhookDelivered, lambda e: (e.delivery_id,))
    execute(conn, "upsert_webhook_deliveries", UPSERT_DELIVERED, {"rows": json_rows(
        {"id": e.delivery_id, "job_id": e.job_id, "url": e.webhook_url, "attempts": e.attempts,
         "delivered_at": e.delivered_at} for e in delivered)})


def project_failed(conn: Connection, envelopes: Sequence[Envelope], _changes: JobChanges) -> None:
    """Mark deliveries failed, unless one was delivered after all."""
    failed = latest_events(envelopes, WebhookFailed, lambda e: (e.delivery_id,))
    execute(conn, "upsert_webhook_deliveries", UPSERT_FAILED, {"rows": json_rows(
        {"id": e.delivery_id, "job_id": e.job_id, "url": e.webhook_url, "attempts": e.attempts,
         "failed_at": e.failed_at, "error": e.error} for e in failed)})

