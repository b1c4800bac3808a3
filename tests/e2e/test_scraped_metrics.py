"""The five services' real /metrics, scraped after a batch job and a synchronous request, held to
outside references: promtool's linter of the exposition format and naming conventions, and the alert
rules, their promtool unit tests and the dashboard, which must read series that exist as they read
them. (tests/unit/test_monitoring.py checks the names against the source; this, the running code.)"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from tests.conftest import Infra, fresh_topics, new_id, own_schema
from tests.e2e.conftest import running_stack
from tests.e2e.harness import SERVICES
from tests.e2e.scraping import samples, scrape
from tests.e2e.workload import cars
from tests.monitoring import MONITORING, Selector, alert_rules, dashboard_queries, promtool, selectors
from tests.polling import wait_for
from tests.seeds import seed_client_class
from tests.servers import image_host, webhook_receiver

pytestmark = pytest.mark.e2e

Series = Mapping[str, list[dict[str, str]]]  # sample name -> the label sets scraped under it
# What the Prometheus Operator's PodMonitor adds to every scraped series (the alert unit tests'
# input series carry `pod`, as Prometheus would store them).
TARGET_LABELS = {"namespace", "pod", "container", "endpoint", "job", "instance"}
CONSUMERS = [name for name in SERVICES if name != "gateway"]


@pytest.fixture(scope="module")
def scrapes(infra: Infra, engine: Engine,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Each service's /metrics once a batch job is delivered, a synchronous request answered, the
    gateway has read the groups' lag from the broker and every consumer its own."""
    with (fresh_topics(infra) as topics, own_schema(infra, engine) as schema,
          running_stack(infra, schema, topics, tmp_path_factory.mktemp("logs"),
                        {"KAFKA_LAG_INTERVAL_S": "0.5"}) as stack,
          image_host() as images, webhook_receiver() as receiver):
        client = seed_client_class()(stack.url, stack.client_key)
        job_id, error = client.batch_generate(cars(images, 3, new_id("metrics")), languages=["en", "de"],
                                              webhook_url=f"{receiver.url}/hooks")
        assert error is None, error
        _, error = client.poll_for_completion(job_id, poll_interval=0.5, max_wait_time=120)
        assert error is None, error
        wait_for(lambda: receiver.received, "the job's webhook", every_s=0.1)
        answer, status = client.sync_generate(new_id("sync"), "Rear collision", [f"{images}/sync-a.png"])
        assert status == 200, answer

        def settled() -> dict[str, str]:
            texts = {name: scrape(f"http://127.0.0.1:{stack.ops_ports[name]}") for name in SERVICES}
            lag_read = samples(texts["gateway"], "lotlens_kafka_group_lag_read") == [({}, 1.0)]
            lags = all(samples(texts[name], "lotlens_kafka_consumer_lag_messages") for name in CONSUMERS)
            return texts if lag_read and lags else {}

        yield wait_for(settled, "the gateway to read the groups' lag, and each consumer to report its own",
                       timeout_s=60, every_s=0.3)


def lint(exposition: str) -> list[str]:
    """`promtool check metrics`'s findings about a text exposition, one per line (none: it passed)."""
    done = subprocess.run([promtool(), "check", "metrics"], input=exposition, capture_output=True,
                          text=True, check=False)
    findings = (done.stdout + done.stderr).splitlines()
    assert (done.returncode == 0) == (not findings), (done.returncode, findings)
    return findings


def test_every_services_metrics_pass_promtools_lint(scrapes: dict[str, str]) -> None:
    # No finding to allow: the six metrics the contract names (API.md, "Other endpoints") pass
    # as they are, so none of them had to be excused from the conventions.
    assert {service: lint(text) for service, text in scrapes.items()} == {service: [] for service in SERVICES}
    # The lint notices a name against the conventions (a counter without `_total`, in ms).
    assert lint("# HELP lotlens_wait_ms Waited\n# TYPE lotlens_wait_ms counter\nlotlens_wait_ms 1\n")


def exported(scrapes: dict[str, str]) -> Series:
    """Every sample name the services export, with the label sets of its series."""
    series: dict[str, list[dict[str, str]]] = {}
    for text in scrapes.values():
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                series.setdefault(sample.name, []).append(sample.labels)
    return series


def unmet(selector: Selector, series: Series) -> list[str]:
    """What a query's selector reads that no scraped series has: the metric, a label it matches or
    groups by, a value it matches exactly."""
    found = series.get(selector.metric)
    if not found:
        return [f"{selector.metric} is not exported"]
    missing = [f"{selector.metric} has no label {label!r}" for label in sorted(selector.labels_read())
               if not any(label in labels for labels in found)]
    return missing + [f'{selector.metric} has no series {label}="{value}"'
                      for label, op, value in selector.matchers
                      if op == "=" and not any(labels.get(label) == value for labels in found)]


def test_every_metric_the_alerts_and_dashboard_read_is_scraped_with_the_labels_they_read(
        scrapes: dict[str, str]) -> None:
    series = exported(scrapes)
    queries = [rule["expr"] for rule in alert_rules()] + dashboard_queries()
    wrong = {expr.strip(): found for expr in queries
             if (found := [problem for selector in selectors(expr) for problem in unmet(selector, series)])}
    assert wrong == {}
    # The check notices a label value no service reports, and a grouping by a label it lacks.
    [misvalued] = selectors('webhook_deliveries_total{status="failure"}')
    [misgrouped] = selectors("max by (topic) (lotlens_kafka_group_members)")
    assert unmet(misvalued, series) and unmet(misgrouped, series)


def unit_test_input_series() -> list[str]:
    """The `series` of every `input_series` of the alerts' promtool unit tests."""
    tests: dict[str, Any] = yaml.safe_load((MONITORING / "alerts.test.yaml").read_text(encoding="utf-8"))
    return [item["series"] for test in tests["tests"] for item in test["input_series"]]


def test_the_alert_unit_tests_feed_series_labelled_as_the_services_label_them(
        scrapes: dict[str, str]) -> None:
    """An alert passing its unit test on series the services never export (a label misspelt, or
    one they do not have) would still never fire."""
    series = exported(scrapes)
    wrong = {}
    for written in unit_test_input_series():
        [selector] = selectors(written)
        # Its label names, not their values: the tests' group names are not the ones a stack runs.
        labels = frozenset(label for label, _, _ in selector.matchers) - TARGET_LABELS
        if found := unmet(Selector(selector.metric, (), labels), series):
            wrong[written] = found
    assert wrong == {}
