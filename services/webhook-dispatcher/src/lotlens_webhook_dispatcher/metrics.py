"""Prometheus metrics of webhook delivery."""

from __future__ import annotations

from collections.abc import Collection

from prometheus_client import Counter, Gauge, Histogram

# The 1.x name and label values (status: success | failed), final outcomes only, kept for the
# dashboards built on them; an attempt that failed with another one due counts in RETRIES.
DELIVERIES = Counter("webhook_deliveries_total", "Webhook deliveries by final outcome", ["status"])
for _status in ("success", "failed"):  # at 0 from the start: the failure-rate alert takes increase()
    DELIVERIES.labels(status=_status)
RETRIES = Counter("lotlens_webhook_retries_total", "Failed attempts with another attempt due")
DELIVERIES_SCHEDULED = Counter("lotlens_webhook_deliveries_scheduled_total", "Deliveries created")
ATTEMPT_SECONDS = Histogram("lotlens_webhook_attempt_duration_seconds", "Duration of one delivery attempt",
                            ["outcome"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60))
PENDING = Gauge("lotlens_webhook_deliveries_pending", "Deliveries not yet delivered or failed")
OLDEST_PENDING_AGE = Gauge("lotlens_webhook_oldest_pending_age_seconds", "Age of the oldest open delivery")
IN_FLIGHT = Gauge("lotlens_webhook_attempts_in_flight", "Attempts being made right now")
# Per client: a label of configured clients only (`client_label`), so the series stay bounded.
CLIENT_IN_FLIGHT = Gauge("lotlens_webhook_client_attempts_in_flight",
                         "Attempts being made right now, per client", ["client"])
UNCONFIGURED_CLIENT = "(unconfigured)"
# Attempts that broke before their POST, nothing sent, by reason (`not_started.NotStarted`):
# every one but `error` (a defect, a failed attempt) passes and is handed back.
NOT_STARTED_REASONS = ("database", "read_models", "no_key", "no_secret", "error")
ATTEMPTS_NOT_STARTED = Counter("lotlens_webhook_attempts_not_started_total",
                               "Attempts that broke before their POST, nothing sent", ["reason"])
for _reason in NOT_STARTED_REASONS:
    ATTEMPTS_NOT_STARTED.labels(reason=_reason)


def client_label(client_id: str, configured: Collection[str]) -> str:
    """The `client` label of a client's attempts: its id if configured (`LOTLENS_CLIENTS`)."""
    return client_id if client_id in configured else UNCONFIGURED_CLIENT


def count_verdict(status: str) -> None:
    """Count an attempt's verdict: `delivered`, `failed` (final) or `pending` (a retry is due)."""
    if status == "pending":
        RETRIES.inc()
    else:
        DELIVERIES.labels(status="success" if status == "delivered" else status).inc()
