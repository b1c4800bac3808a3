"""Counters an alert takes `increase()` of exist at 0 from start-up, for every label set the code
can emit: a series born at 1 has no increase, so the first dead letter or orphaned batch of a
pod was never alerted on (Prometheus sees the series appear, not the step from 0 to 1)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy.exc import OperationalError

from lotlens_common import dead_letters
from lotlens_common.model.errors import (
    ERROR_KINDS,
    ModelError,
    ModelOutputError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelTimeoutError,
    ModelUnavailableError,
    error_kind,
)
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_webhook_dispatcher import metrics as dispatcher_metrics
from lotlens_webhook_dispatcher.not_started import NotStarted, Unready
from tests.unit.consumer_fakes import FakeMessage, event, run

ONE_OF_EACH_KIND: list[BaseException] = [
    ModelRequestError("refused", status_code=401), ModelRateLimitedError("slow down"),
    ModelTimeoutError("timed out"), ModelUnavailableError("down"), ModelRequestError("bad", status_code=400),
    ModelOutputError("unusable"), ModelError("something else")]


def series(name: str, registry: CollectorRegistry = REGISTRY) -> set[tuple[tuple[str, str], ...]]:
    """The label sets of a counter's `_total` samples."""
    return {tuple(sorted(sample.labels.items()))
            for metric in registry.collect() if metric.name == name.removesuffix("_total")
            for sample in metric.samples if sample.name == name}


def no_new_series(name: str, events: Callable[[], None], registry: CollectorRegistry = REGISTRY) -> None:
    before = series(name, registry)
    events()
    born = series(name, registry) - before
    assert not born, f"{name}: series born at their first event (increase() misses it): {sorted(born)}"


def test_the_examples_cover_every_error_kind() -> None:
    assert sorted(map(error_kind, ONE_OF_EACH_KIND)) == sorted(ERROR_KINDS)


def test_a_consumer_exports_its_dead_letter_counter_at_zero_from_start() -> None:
    stop = threading.Event()
    stop.set()
    run([], lambda _envelopes: None, stop, group="g-series")

    def refuse(_envelopes: object) -> None:
        raise ValueError("a handler's defect")

    def undecodable_then_refused() -> None:
        run([[FakeMessage(0, b"not an event")]], lambda _envelopes: None, group="g-series")
        run([[FakeMessage(0, event(0))]], refuse, group="g-series")

    no_new_series("lotlens_dead_letters_total", undecodable_then_refused)
    assert {dict(labels)["reason"] for labels in series("lotlens_dead_letters_total")
            if dict(labels)["group"] == "g-series"} == set(dead_letters.REASONS)


def test_the_gateway_exports_its_model_error_counter_at_zero_from_start() -> None:
    metrics = GatewayMetrics()
    def every_error() -> None:
        for api in ("vision", "translation"):
            for exc in ONE_OF_EACH_KIND:
                metrics.openai_errors.labels(api=api, kind=error_kind(exc)).inc()

    no_new_series("openai_api_errors_total", every_error, metrics.registry)


def test_the_dispatcher_exports_both_final_outcomes_at_zero_from_start() -> None:
    def both_outcomes() -> None:
        for verdict in ("delivered", "failed"):
            dispatcher_metrics.count_verdict(verdict)

    no_new_series("webhook_deliveries_total", both_outcomes)


def test_the_dispatcher_exports_every_reason_an_attempt_did_not_start_at_zero_from_start() -> None:
    causes = [OperationalError("SELECT 1", {}, Exception("down")), KeyError("a defect"),
              Unready("read_models", "lagging"), Unready("no_key", "not configured")]
    def every_reason() -> None:
        for cause in causes:
            dispatcher_metrics.ATTEMPTS_NOT_STARTED.labels(reason=NotStarted("payload", cause).reason).inc()

    no_new_series("lotlens_webhook_attempts_not_started_total", every_reason)
