"""deploy/monitoring: the alert rules pass their promtool unit tests, the dashboard is a well-formed
Grafana dashboard, and every query of either names only metrics the services export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import monitoring
from tests.k8s import ROOT
from tests.monitoring import (
    MONITORING,
    RULE_FILE,
    Selector,
    alert_rules,
    dashboard,
    dashboard_queries,
    metric_names,
    selectors,
    write_rule_file,
)

SOURCES = [*(ROOT / "libs" / "common" / "src").rglob("*.py"), *(ROOT / "services").rglob("src/**/*.py")]
# Metrics objects, and the gauges a custom collector yields at scrape time (GaugeMetricFamily).
METRIC = re.compile(r"\b(Counter|Gauge|Histogram|GaugeMetricFamily)\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"")
PANEL_TYPES = {"row", "timeseries", "stat", "gauge", "table", "bargauge"}


def exported_metrics() -> set[str]:
    """Every sample name the code exports (counters with `_total`, histograms with their series)."""
    names: set[str] = set()
    for path in SOURCES:
        for kind, name in METRIC.findall(path.read_text(encoding="utf-8")):
            if kind == "Counter":
                names.add(name if name.endswith("_total") else f"{name}_total")
            elif kind == "Histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
            else:
                names.add(name)
    return names


@pytest.fixture(scope="module")
def promtool() -> str:
    return monitoring.promtool()


def test_the_rules_are_valid_and_pass_their_unit_tests(promtool: str, tmp_path: Path) -> None:
    write_rule_file(tmp_path)
    shutil.copy(MONITORING / "alerts.test.yaml", tmp_path / "alerts.test.yaml")
    checked = subprocess.run([promtool, "check", "rules", RULE_FILE], cwd=tmp_path,
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", "alerts.test.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_promtool_catches_a_broken_expectation(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: the file's unit test with one expected alert changed does (run
    alone: promtool evaluates every test of a file, 3 s, and the others pass in the test above)."""
    write_rule_file(tmp_path)
    written = (MONITORING / "alerts.test.yaml").read_text(encoding="utf-8")
    tests = yaml.safe_load(written)["tests"]
    broken = yaml.safe_load(written.replace("group: lotlens-translator}",
                                            "group: lotlens-vision-batcher}", 1))
    broken["tests"] = [test for test, was in zip(broken["tests"], tests, strict=True) if test != was]
    assert len(broken["tests"]) == 1, "the replaced expectation is in no test, or in several"
    (tmp_path / "alerts.test.yaml").write_text(yaml.safe_dump(broken), encoding="utf-8")
    tested = subprocess.run([promtool, "test", "rules", "alerts.test.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, check=False)
    assert tested.returncode != 0 and "FAILED" in tested.stdout + tested.stderr


def test_every_alert_the_issue_asks_for_exists_and_is_unit_tested() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names == {
        "LotLensConsumerLagGrowing", "LotLensConsumerStuck", "LotLensConsumerGroupWithoutMembers",
        "LotLensConsumerGroupAbsent", "LotLensConsumerPartitionsUnassigned", "LotLensConsumerLagUnread",
        "LotLensDeadLetters", "LotLensOutboxBacklog", "LotLensOutboxFloorHeldBack",
        "LotLensOutboxRowsLeftBelowFloor",
        "LotLensOpenAIAuthenticationErrors", "LotLensOpenAIBatchOrphaned", "LotLensOpenAIBatchOverAge",
        "LotLensWebhookFailureRate",
        "LotLensWebhookAttemptsNotStarted", "LotLensWebhookBacklogOld", "LotLensStageRoundsFailing",
        "LotLensOpenAIUnreachable", "LotLensAPIErrors", "LotLensSyncLotsFailing", "LotLensOpenAIQueueHeld"}
    tests = (MONITORING / "alerts.test.yaml").read_text(encoding="utf-8")
    for name in names:
        assert f"alertname: {name}" in tests, name
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["type"] in PANEL_TYPES and panel["title"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("x", "y", "w", "h"))
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        assert all(target["expr"].strip() for target in panel["targets"])


def test_every_query_names_metrics_the_services_export() -> None:
    exported = exported_metrics()
    assert "lotlens_kafka_consumer_lag_messages" in exported and "webhook_deliveries_total" in exported
    queries = [rule["expr"] for rule in alert_rules()] + dashboard_queries()
    unknown = {name for expr in queries for name in metric_names(expr)} - exported
    assert not unknown, f"queries name metrics nobody exports: {sorted(unknown)}"
    # The check itself notices a misspelt metric.
    assert metric_names("sum by (group) (lotlens_kafka_consumer_lag_mesages)") - exported


def test_a_query_reads_its_metrics_matchers_and_the_labels_it_groups_by() -> None:
    # What tests/e2e/test_scraped_metrics.py holds against the services' real /metrics.
    [lag] = selectors('sum by (group) (max by (group, topic) (x_total{kind="a", pod!~"b.*"}[5m] offset 1h))')
    assert lag == Selector("x_total", (("kind", "=", "a"), ("pod", "!~", "b.*")),
                           frozenset({"group", "topic"}))
    assert lag.labels_read() == {"group", "topic", "kind", "pod"}
    assert [(s.metric, s.grouped_by) for s in selectors("max(a) == 0 or absent(b_seconds)")] == [
        ("a", frozenset()), ("b_seconds", frozenset())]


def test_the_dashboard_covers_every_signal_the_alerts_watch() -> None:
    alerting = {name for rule in alert_rules() for name in metric_names(rule["expr"])}
    shown = {name for expr in dashboard_queries() for name in metric_names(expr)}
    assert alerting <= shown, sorted(alerting - shown)


# Gauges every replica sets to the same figure, read from the shared database or the broker (each
# watches all of its stage's batches, counts every waiting lot or open delivery, every gateway
# reads every group's lag): summed over replicas they
# read 12 times too high at 12 instances, and an alert on one fires once per pod.
SHARED_GAUGES = (
    "lotlens_openai_batches", "lotlens_openai_oldest_batch_age_seconds", "lotlens_stage_lots_waiting",
    "lotlens_openai_enqueued_tokens", "lotlens_stage_queue_held_seconds",
    "lotlens_stage_queue_refusals_in_a_row", "lotlens_webhook_deliveries_pending",
    "lotlens_webhook_oldest_pending_age_seconds", "lotlens_outbox_backlog_events",
    "lotlens_outbox_oldest_age_seconds", "lotlens_kafka_group_lag_messages", "lotlens_kafka_group_members",
    "lotlens_kafka_group_unassigned_partitions")
_MAX_OR_MIN_OF = re.compile(r"\b(max|min)\s*(by\s*\([^)]*\)\s*)?\(\s*$")


def unaggregated_shared_gauges(expr: str) -> list[str]:
    """The shared gauges `expr` reads other than straight through max() or min()."""
    return [name for name in SHARED_GAUGES
            for found in re.finditer(rf"\b{name}\b(?!_)", expr)
            if not _MAX_OR_MIN_OF.search(expr[:found.start()])]


def test_gauges_every_replica_reports_alike_are_read_through_max_or_min() -> None:
    queries = [rule["expr"] for rule in alert_rules()] + dashboard_queries()
    wrong = {expr.strip(): unaggregated_shared_gauges(expr) for expr in queries}
    assert not {expr: names for expr, names in wrong.items() if names}
    assert unaggregated_shared_gauges("sum by (stage) (lotlens_stage_lots_waiting)")
    assert not unaggregated_shared_gauges("max by (stage) (lotlens_stage_lots_waiting) > 5")


def runbook_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown document (lower case, spaces to dashes)."""
    return {re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.MULTILINE)}


def test_every_alert_has_a_description_and_a_runbook_section_that_exists() -> None:
    anchors = runbook_anchors((ROOT / "docs" / "RUNBOOK.md").read_text(encoding="utf-8"))
    for rule in alert_rules():
        annotations = rule["annotations"]
        assert annotations.get("description"), rule["alert"]
        path, _, anchor = annotations.get("runbook_url", "").partition("#")
        assert path == "docs/RUNBOOK.md" and anchor in anchors, (rule["alert"], path, anchor)
    # The check notices a section that is missing.
    assert "lotlensnosuchalert" not in anchors and "lotlensdeadletters" in anchors


def runbook_section(alert: str) -> str:
    """An alert's section of docs/RUNBOOK.md, heading to the next heading."""
    runbook = (ROOT / "docs" / "RUNBOOK.md").read_text(encoding="utf-8")
    return runbook.split(f"\n## {alert}\n", 1)[1].split("\n## ", 1)[0]


def test_the_runbook_explains_every_reason_an_attempt_is_not_started() -> None:
    # The alert fires per `reason`; the section named two of the five, and said a client whose
    # secrets were deleted did not set it off (its webhooks going out unsigned) after the
    # dispatcher had begun to hand such deliveries back as `no_secret`.
    from lotlens_webhook_dispatcher.metrics import NOT_STARTED_REASONS

    section = runbook_section("LotLensWebhookAttemptsNotStarted")
    assert [reason for reason in NOT_STARTED_REASONS if f"`{reason}`" not in section] == []
    assert "without `webhook-signature`" not in section


def test_a_lag_alert_is_not_answered_by_adding_partitions() -> None:
    # Both said "raise the partitions ... before maxReplicaCount", which docs/EVENT_LOG.md warns
    # against: more partitions send each in-flight job's later events to another partition.
    scaling = (ROOT / "deploy" / "k8s" / "README.md").read_text(encoding="utf-8").split(
        "\n## Scaling and disruption\n", 1)[1].split("\n## ", 1)[0]
    for name, text in (("runbook", runbook_section("LotLensConsumerLagGrowing")), ("k8s README", scaling)):
        flat = " ".join(text.split())
        assert not re.search(r"raise the partitions[^.]*before", flat, re.IGNORECASE), name
        assert "docs/EVENT_LOG.md" in flat, f"{name} does not point at the re-keying warning"


def test_the_readmes_alert_table_lists_every_rule_and_no_other() -> None:
    # Four rules were missing from it (LotLensAPIErrors, LotLensSyncLotsFailing,
    # LotLensWebhookBacklogOld, LotLensOpenAIQueueHeld): read as the list of what pages, it said
    # that failing synchronous lots and hours-old webhooks page nobody.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("| alert | fires when |", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE)
    assert sorted(listed) == sorted(rule["alert"] for rule in alert_rules())
