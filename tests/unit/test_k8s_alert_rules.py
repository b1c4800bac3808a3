"""deploy/k8s: the production overlay deploys the alert rules as a PrometheusRule, from their one
source (deploy/monitoring/alerts.yaml, whose groups promtool tests), every alert of it unchanged but
for its runbook link made absolute by one overlay setting; the local overlay (no Prometheus Operator
in kind or minikube) and the base deploy none."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.k8s import K8S, objects
from tests.monitoring import MONITORING, alert_groups

Doc = dict[str, Any]
PRODUCTION = K8S / "overlays" / "production"


def prometheus_rules(target: str) -> list[Doc]:
    return [doc for doc in objects(target) if doc["kind"] == "PrometheusRule"]


def runbook_url_setting() -> str:
    """The production overlay's one setting for where docs/RUNBOOK.md is read."""
    kustomization = yaml.safe_load((PRODUCTION / "kustomization.yaml").read_text(encoding="utf-8"))
    [settings] = [g for g in kustomization["configMapGenerator"] if g["name"] == "lotlens-alert-settings"]
    literals = dict(literal.split("=", 1) for literal in settings["literals"])
    return str(literals["RUNBOOK_URL"])


def test_production_deploys_every_alert_as_a_prometheus_rule() -> None:
    deployed = prometheus_rules("overlays/production")
    assert [(d["metadata"]["name"], d["metadata"].get("namespace")) for d in deployed] == [
        ("lotlens", "lotlens")], deployed
    [rule_object] = deployed
    assert rule_object["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule_object["metadata"]["labels"]["app.kubernetes.io/part-of"] == "lotlens"
    source = alert_groups()
    deployed_groups = rule_object["spec"]["groups"]
    assert [g["name"] for g in deployed_groups] == [g["name"] for g in source]
    # Every alert that promtool tests is deployed, and nothing else is.
    unit_tests = (MONITORING / "alerts.test.yaml").read_text(encoding="utf-8")
    tested = set(re.findall(r"alertname: (\w+)", unit_tests))
    deployed_alerts = {rule["alert"] for group in deployed_groups for rule in group["rules"]}
    assert deployed_alerts == tested, sorted(deployed_alerts ^ tested)
    base = runbook_url_setting()
    assert base.startswith("https://") and base.endswith("/docs/RUNBOOK.md")
    for source_group, deployed_group in zip(source, deployed_groups, strict=True):
        for written, rule in zip(source_group["rules"], deployed_group["rules"], strict=True):
            relative = written["annotations"]["runbook_url"]
            assert relative.startswith("docs/RUNBOOK.md#"), written["alert"]
            assert rule["annotations"]["runbook_url"] == base + relative.removeprefix("docs/RUNBOOK.md")
            unlinked = {**rule, "annotations": {**rule["annotations"], "runbook_url": relative}}
            assert unlinked == written, written["alert"]


def test_no_prometheus_rule_where_there_is_no_prometheus_operator() -> None:
    assert prometheus_rules("overlays/local") == []
    assert prometheus_rules("base") == []


def pod_monitors(target: str) -> list[Doc]:
    return [doc for doc in objects(target) if doc["kind"] == "PodMonitor"]


def test_production_has_prometheus_scrape_every_pods_ops_port() -> None:
    # The Prometheus Operator (which the PrometheusRule needs) ignores `prometheus.io/*`
    # annotations: without a PodMonitor nothing scraped the pods, and every alert saw no series.
    [monitor] = pod_monitors("overlays/production")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == "lotlens"
    selector = monitor["spec"]["selector"]["matchLabels"]
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "ops" and endpoint["path"] == "/metrics"
    deployments = [doc for doc in objects("overlays/production") if doc["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        template = deployment["spec"]["template"]
        assert selector.items() <= template["metadata"]["labels"].items(), deployment["metadata"]["name"]
        ports = [port for container in template["spec"]["containers"] for port in container.get("ports", [])]
        assert {"name": "ops", "containerPort": 9100} in [
            {k: port[k] for k in ("name", "containerPort")} for port in ports], deployment["metadata"]["name"]


def test_no_pod_monitor_where_there_is_no_prometheus_operator() -> None:
    assert pod_monitors("overlays/local") == []
    assert pod_monitors("base") == []
