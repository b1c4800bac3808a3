"""Prometheus metrics of the gateway, in its own registry (`GET /metrics` on the operations port)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

from lotlens_common.model.errors import ERROR_KINDS
from lotlens_common.model.usage import JobUsage, Usage

_TOKEN_KINDS = ("input", "cached_input", "output", "reasoning")
# The gateway's readings that make Kafka admin calls, each in a child process of its own.
ADMIN_READS = ("health", "group_lag")
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class GatewayMetrics:
    """The contract's metrics plus HTTP request counts; one instance per app."""

    def __init__(self, registry: CollectorRegistry | None = None, process: bool = False) -> None:
        self.registry = registry or CollectorRegistry()
        if process:
            ProcessCollector(registry=self.registry)
        self.generation_requests = Counter(
            "generation_requests_total", "Accepted generation requests", ["mode"], registry=self.registry)
        self.generation_duration = Histogram(
            "generation_duration_seconds", "Time to answer a generation request", ["mode"],
            buckets=_DURATION_BUCKETS, registry=self.registry)
        self.database_operations = Counter(
            "database_operations_total", "Statements the gateway ran against PostgreSQL", ["operation"],
            registry=self.registry)
        # api: vision | translation (the 1.x values); kind: lotlens_common.model.errors.error_kind.
        self.openai_errors = Counter(
            "openai_api_errors_total", "Model API errors in synchronous mode", ["api", "kind"],
            registry=self.registry)
        for api in ("vision", "translation"):  # at 0 from the start: an alert takes increase()
            for kind in ERROR_KINDS:
                self.openai_errors.labels(api=api, kind=kind)
        self.http_requests = Counter(
            "lotlens_http_requests_total", "HTTP requests by route and status", ["method", "route", "status"],
            registry=self.registry)
        self.openai_reachable = Gauge(
            "lotlens_openai_reachable", "1 when the model API answered the last reachability check",
            registry=self.registry)
        self.outbox_backlog = Gauge(
            "lotlens_outbox_backlog_events", "Outbox events not yet published to Kafka",
            registry=self.registry)
        self.outbox_oldest_age = Gauge(
            "lotlens_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox event (0: none)",
            registry=self.registry)
        # Per topic, this process's own floor (`outbox_floor`, `outbox_gauges`): held by a transaction
        # that took its id before the floor's proposal and still runs anywhere on the server.
        self.outbox_floor_lag = Gauge(
            "lotlens_outbox_floor_lag_ids", "Outbox ids from the relay's floor of the topic (or the lowest "
            "id kept, when higher) to the highest id its last read saw: rows each of its reads walks, "
            "published ones included", ["topic"],
            registry=self.registry)
        self.outbox_floor_held = Gauge(
            "lotlens_outbox_floor_held_seconds", "How long the relay's floor of the topic has waited for a "
            "transaction that still runs on the PostgreSQL server (it has had its transaction id at least "
            "this long; 0: none)",
            ["topic"], registry=self.registry)
        self.outbox_left_behind = Counter(
            "lotlens_outbox_rows_left_below_floor", "Unpublished outbox rows the relay's audit (a slice of "
            "ids below its floor of the topic a minute) found its floor had passed (a defect: each is "
            "published then, late)",
            ["topic"], registry=self.registry)
        # reading: the child process (admin_process.py) of the health probe or of the group-lag gauges.
        self.admin_process_restarts = Counter(
            "lotlens_kafka_admin_process_restarts", "Child processes making the gateway's Kafka admin calls "
            "that died (librdkafka aborted or crashed them) or hung past a call's timeout and were killed, "
            "each replaced at the next call", ["reading"], registry=self.registry)
        for reading in ADMIN_READS:  # at 0 from the start: the first restart is an increase()
            self.admin_process_restarts.labels(reading=reading)
        self.outbox_published = Counter(
            "lotlens_outbox_published_events", "Outbox events the relay published (duplicates included)",
            registry=self.registry)

        self.intake_jobs = Gauge(
            "lotlens_intake_jobs", "Job bodies this process is taking now (its intake slots in use)",
            registry=self.registry)
        self.intake_admitted = Gauge(
            "lotlens_intake_admitted", "Job bodies this process has admitted: being read, waiting for "
            "an intake slot or taken", registry=self.registry)
        # reason: `full` (not admitted, read and dropped), `waited` (no slot freed up in time). A
        # resend of a job accepted before is counted too: its 201 is replayed, it was not taken in.
        self.intake_busy = Counter(
            "lotlens_intake_busy", "Job bodies intake could not take in (answered 503 INTAKE_BUSY, or "
            "a resend of an accepted job replayed)", ["reason"],
            registry=self.registry)
        self.struck_out = Counter(
            "lotlens_intake_struck_out", "Bodies answered 429 unread: their address had too many "
            "refused before authentication (strikes.py)", registry=self.registry)

        self.downloads = Gauge(
            "lotlens_downloads", "Results downloads and lots pages this process is sending now",
            registry=self.registry)
        # reason: `client` (429, the client's places taken), `process` (503 DOWNLOADS_BUSY).
        self.downloads_refused = Counter(
            "lotlens_downloads_refused", "Results downloads and lots pages refused for want of a place",
            ["reason"], registry=self.registry)

        self.sync_lots = Gauge(
            "lotlens_sync_lots", "Synchronous lots this process is describing now", registry=self.registry)
        # reason: `client` (429, the client's places taken), `process` (503 SYNCHRONOUS_BUSY).
        self.sync_refused = Counter(
            "lotlens_sync_refused", "Synchronous lots refused for want of a place", ["reason"],
            registry=self.registry)
        for reason in ("client", "process"):  # at 0 from the start: an alert takes increase()
            self.sync_refused.labels(reason=reason)
        # The result-store's names: it counts finished jobs' answers, the gateway synchronous lots'
        # (a lot that fails or ends in a 502/504 included), so a sum over both is all that was billed.
        self.model_tokens = Counter(
            "lotlens_model_tokens_total", "Tokens of synchronous lots' model answers, by model and kind",
            ["model", "kind"], registry=self.registry)
        self.estimated_cost = Counter(
            "lotlens_estimated_cost_usd_total", "Estimated cost of synchronous lots' model answers (USD)",
            ["model"], registry=self.registry)

    def db(self, operation: str, count: int = 1) -> None:
        """Count database statements (`create`, `read`, `update`, `delete`)."""
        self.database_operations.labels(operation=operation).inc(count)

    def count_usage(self, answers: Iterable[Usage]) -> None:
        """Add a synchronous lot's answers' tokens and estimated cost."""
        for model, part in JobUsage.of(answers).by_model.items():
            for kind in _TOKEN_KINDS:
                self.model_tokens.labels(model=model, kind=kind).inc(getattr(part, f"{kind}_tokens"))
            if part.estimated_cost_usd is not None:
                self.estimated_cost.labels(model=model).inc(part.estimated_cost_usd)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
