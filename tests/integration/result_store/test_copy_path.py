"""The result-store's fast path: rows seen for the first time are COPYed, and a batch that meets
rows already there takes the idempotent statements without changing the outcome."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from tests.integration.result_store.support import Apply, assert_job_finished, job_script, lot_rows

pytestmark = pytest.mark.integration


def test_new_rows_are_copied_and_rows_seen_again_take_the_idempotent_statements(
        engine: Engine, apply: Apply) -> None:
    script = job_script(3)

    def ran(operation: str) -> float:
        return REGISTRY.get_sample_value("lotlens_result_store_db_statements_total",
                                         {"operation": operation}) or 0

    operations = ("copy_lots", "upsert_lots", "describe_running_lots", "complete_running_lots",
                  "complete_lots", "copy_descriptions", "insert_descriptions")
    before = {op: ran(op) for op in operations}
    apply(script.submissions)
    apply(script.vision)
    apply(script.translation)
    assert {op: ran(op) - count for op, count in before.items()} == {
        "copy_lots": 1, "upsert_lots": 0,  # the lots are there and running: updated in place
        "describe_running_lots": 1, "complete_running_lots": 1, "complete_lots": 0,
        "copy_descriptions": 1, "insert_descriptions": 0}
    # Submissions and translations again, in one batch: the lots' COPY meets rows already there and
    # falls back to its idempotent statement; the translations find no lot running and take theirs,
    # which completes none now, so they write no text at all (a lot's texts are stored with the
    # event that completes it); the state stays.
    apply(script.submissions + script.translation)
    assert ran("copy_lots") - before["copy_lots"] == 2 and ran("upsert_lots") - before["upsert_lots"] == 1
    assert ran("complete_lots") - before["complete_lots"] == 1
    assert ran("copy_descriptions") - before["copy_descriptions"] == 1
    assert ran("insert_descriptions") - before["insert_descriptions"] == 0
    assert_job_finished(engine, script)
    assert {row["additional_info"] for row in lot_rows(engine, script.job_id).values()} == {
        "car 0", "car 1", "car 2"}
