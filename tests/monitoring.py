"""deploy/monitoring under test: the alert rules' one source is the PrometheusRule alerts.yaml, and
promtool reads its groups from the plain rule file this writes (alerts.test.yaml names it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.k8s import ROOT

MONITORING = ROOT / "deploy" / "monitoring"
RULE_FILE = "alerts.groups.yaml"  # what alerts.test.yaml's rule_files names


def alert_groups() -> list[dict[str, Any]]:
    """The rule groups of deploy/monitoring/alerts.yaml (a PrometheusRule's `spec.groups`)."""
    rule: dict[str, Any] = yaml.safe_load((MONITORING / "alerts.yaml").read_text(encoding="utf-8"))
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def write_rule_file(directory: Path) -> Path:
    """alerts.yaml's groups as a Prometheus rule file (`rule_files:`) in `directory`, for promtool."""
    path = directory / RULE_FILE
    path.write_text(yaml.safe_dump({"groups": alert_groups()}, sort_keys=False, allow_unicode=True),
                    encoding="utf-8")
    return path
