"""deploy/monitoring under test: the alert rules' one source is the PrometheusRule alerts.yaml, and
promtool reads its groups from the plain rule file this writes (alerts.test.yaml names it); the
dashboard's queries; and what each query reads (metrics, their matchers, the labels it keeps)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.k8s import ROOT, tools

MONITORING = ROOT / "deploy" / "monitoring"
RULE_FILE = "alerts.groups.yaml"  # what alerts.test.yaml's rule_files names
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "by", "without", "and", "or", "unless", "on", "ignoring",
    "rate", "irate", "increase", "delta", "deriv", "absent", "histogram_quantile", "le", "bool",
    "min_over_time",
    "group_left", "group_right", "offset", "topk", "bottomk", "label_replace", "clamp_min",
}


def alert_groups() -> list[dict[str, Any]]:
    """The rule groups of deploy/monitoring/alerts.yaml (a PrometheusRule's `spec.groups`)."""
    rule: dict[str, Any] = yaml.safe_load((MONITORING / "alerts.yaml").read_text(encoding="utf-8"))
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of alerts.yaml, all groups together."""
    return [rule for group in alert_groups() for rule in group["rules"]]


def write_rule_file(directory: Path) -> Path:
    """alerts.yaml's groups as a Prometheus rule file (`rule_files:`) in `directory`, for promtool."""
    path = directory / RULE_FILE
    path.write_text(yaml.safe_dump({"groups": alert_groups()}, sort_keys=False, allow_unicode=True),
                    encoding="utf-8")
    return path


def dashboard() -> dict[str, Any]:
    """deploy/monitoring/dashboard.json."""
    loaded: dict[str, Any] = json.loads((MONITORING / "dashboard.json").read_text(encoding="utf-8"))
    return loaded


def dashboard_queries() -> list[str]:
    """The PromQL of every panel target of the dashboard."""
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def promtool() -> str:
    """The path of promtool (scripts/tools.sh puts it beside the Go tools when the machine has none)."""
    found = tools() / "promtool"
    assert os.access(found, os.X_OK), "scripts/tools.sh did not provide promtool"
    return str(found)


@dataclass(frozen=True)
class Selector:
    """One metric a PromQL expression reads: its label matchers, and the labels the aggregations
    around it group by (`by`)."""

    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)
    grouped_by: frozenset[str]

    def labels_read(self) -> set[str]:
        """The labels the expression needs this metric's series to have (a missing one is no
        error in PromQL: the matcher matches nothing, the grouping lumps every series together)."""
        return {label for label, _, _ in self.matchers} | self.grouped_by


_BLANKED = re.compile(r'"[^"]*"|\[[^\]]*\]|\b(?:without|on|ignoring)\s*\([^)]*\)')
_AGGREGATION = re.compile(r"\bby\s*\(([^)]*)\)\s*\(")
_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def _closing(text: str, opening: int) -> int:
    """The index of the parenthesis that closes the one at `opening`."""
    depth = 0
    for index in range(opening, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return index
    raise ValueError(f"unbalanced parentheses in {text!r}")


def selectors(expr: str) -> list[Selector]:
    """Every metric `expr` reads, in order (of aggregations, the prefix form `sum by (l) (...)` alone
    is understood: the one alerts.yaml and the dashboard write)."""
    # Blanked, not removed: positions stay those of `expr`, whose strings the matchers read.
    masked = _BLANKED.sub(lambda m: " " * len(m.group()), expr)
    scopes = [(m.end() - 1, _closing(masked, m.end() - 1), frozenset(re.findall(r"\w+", m.group(1))))
              for m in _AGGREGATION.finditer(masked)]
    masked = _AGGREGATION.sub(lambda m: " " * (len(m.group()) - 1) + "(", masked)
    found = []
    for match in _SELECTOR.finditer(masked):
        name, start = match.group(1), match.start()
        if name in PROMQL_WORDS or masked[match.end(1):].lstrip().startswith("("):
            continue
        braces = expr[match.start(2):match.end(2)] if match.group(2) else ""
        grouped_by = frozenset(label for opening, closing, labels in scopes if opening < start < closing
                               for label in labels)
        found.append(Selector(name, tuple(_MATCHER.findall(braces)), grouped_by))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression."""
    return {selector.metric for selector in selectors(expr)}

