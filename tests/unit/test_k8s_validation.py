"""Every manifest of the kustomize base and of each overlay, after `kustomize build`, validated by
kubeconform in strict mode against the Kubernetes, KEDA and Prometheus Operator (PrometheusRule,
PodMonitor) schemas, offline; a typo fails."""

from __future__ import annotations

import json

import pytest

from tests.k8s import TARGETS, build, kubeconform


@pytest.mark.parametrize("target", TARGETS)
def test_every_manifest_is_valid_in_strict_mode(target: str) -> None:
    manifests = build(target)
    result = kubeconform(manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)["summary"]
    documents = manifests.count("\n---\n") + 1
    assert summary == {"valid": documents, "invalid": 0, "errors": 0, "skipped": 0}, summary
    print(f"kubeconform {target}: {summary}")


@pytest.mark.parametrize(("field", "typo"), [
    ("containerPort:", "containerPrt:"),          # a core Kubernetes object (Deployment)
    ("minReplicaCount:", "minReplicaCont:"),      # a KEDA ScaledObject
    ("policyTypes:", "policyType:"),              # a NetworkPolicy
    ("expr:", "expression:"),                     # a PrometheusRule's alert
    ("podMetricsEndpoints:", "podMetricEndpoints:"),  # the PodMonitor
])
def test_a_deliberate_typo_fails_validation(field: str, typo: str) -> None:
    manifests = build("overlays/production")
    assert field in manifests
    result = kubeconform(manifests.replace(field, typo, 1))
    assert result.returncode != 0
    summary = json.loads(result.stdout)["summary"]
    assert summary["invalid"] == 1 and summary["skipped"] == 0, summary
    assert typo.rstrip(":") in result.stdout


def test_an_unknown_kind_is_an_error_not_a_skip() -> None:
    unknown = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n"
    result = kubeconform(build("base") + "---\n" + unknown)
    assert result.returncode != 0
    assert json.loads(result.stdout)["summary"]["errors"] == 1
