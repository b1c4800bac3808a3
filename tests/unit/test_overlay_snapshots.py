"""A cancelled job's results read its outbox lots in snapshots that end before any lot is handed
on: a snapshot still open while the client downloads idles in its transaction, and PostgreSQL
ends it (`DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS`), breaking the download."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from sqlalchemy import Connection

from lotlens_common.read_models import JobView
from lotlens_gateway import overlay

NOW = datetime(2026, 3, 1, tzinfo=UTC)
JOB = JobView(job_id="job-1", client_id="acme", status="cancelled", api_version="2.0", languages=["en"],
              total_lots=3, processed_lots=1, failed_lots=0, images_processed=2, webhook_configured=False,
              error_message=None, created_at=NOW, updated_at=NOW, estimated_completion=None,
              completed_at=None, cancelled_at=NOW)


def test_a_cancelled_jobs_lots_are_each_handed_on_with_no_snapshot_open(
        monkeypatch: pytest.MonkeyPatch) -> None:
    open_snapshots = 0

    @contextmanager
    def snapshot() -> Iterator[Connection]:
        nonlocal open_snapshots
        open_snapshots += 1
        try:
            yield cast(Connection, None)
        finally:
            open_snapshots -= 1

    # lot-1 projected and unfinished, lot-2 projected late (placed behind the listed lots), lot-3
    # only in the outbox.
    monkeypatch.setattr(overlay, "unprojected_lot_ids", lambda _conn, _job: {"lot-3": None})
    monkeypatch.setattr(overlay, "unplaced_lot_ids", lambda _conn, _job: {"lot-2": None})
    monkeypatch.setattr(overlay, "lots_by_id", lambda _conn, _job, ids: [
        {"lot_id": lot_id, "status": "completed"} for lot_id in ids])
    projected: list[dict[str, Any]] = [{"lot_id": "lot-1", "status": "processing"}]
    handed = [(lot["lot_id"], lot["status"], open_snapshots)
              for lot in overlay.job_lots(JOB, projected, snapshot)]
    assert handed == [("lot-1", "cancelled", 0), ("lot-2", "completed", 0), ("lot-3", "cancelled", 0)]
