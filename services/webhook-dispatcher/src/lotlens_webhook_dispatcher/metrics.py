"""Prometheus metrics of webhook delivery."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# status: delivered, failed (final outcomes) and retrying (an attempt failed, another is due).
DELIVERIES = Counter("webhook_deliveries_total", "Webhook delivery outcomes", ["status"])
DELIVERIES_SCHEDULED = Counter("webhook_deliveries_scheduled_total", "Deliveries created")
ATTEMPT_SECONDS = Histogram("webhook_attempt_duration_seconds", "Duration of one delivery attempt",
                            ["outcome"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60))
PENDING = Gauge("webhook_deliveries_pending", "Deliveries not yet delivered or failed")
OLDEST_PENDING_AGE = Gauge("webhook_oldest_pending_age_seconds", "Age of the oldest open delivery")
IN_FLIGHT = Gauge("webhook_attempts_in_flight", "Attempts being made right now")
