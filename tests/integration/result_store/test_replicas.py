"""The result-store's statements run by two replicas at once (KEDA scales it): what one commits
while the other's statement waits is counted."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from lotlens_common.events import TranslationCompleted, VisionCompleted
from lotlens_common.row_sets import json_rows
from lotlens_common.tables import lots
from lotlens_result_store import handlers, sql
from tests.conftest import new_id
from tests.integration.lock_waits import wait_for_a_lock_wait
from tests.integration.result_store.support import IMAGES_PER_LOT, Apply, job_row, job_script

pytestmark = pytest.mark.integration


def test_a_lot_completed_by_another_replica_meanwhile_gets_its_images_counted(engine: Engine) -> None:
    # Two replicas: one completes the lot (its translation, with 0 images: the vision result is not
    # projected yet) while the other projects that vision result. The vision statement read its
    # snapshot before the completion committed, found the lot not completed and added nothing,
    # then waited for the lot's row and wrote its images: the job never counted them.
    job_id = new_id("job-")
    with engine.begin() as conn:
        conn.execute(insert(lots), [{"job_id": job_id, "lot_id": "lot-0", "status": "translating"}])
    completing = engine.connect()
    completing.execute(sql.COMPLETE_LOTS, {"rows": json_rows(
        [{"job_id": job_id, "lot_id": "lot-0", "processed_at": "2026-01-01T00:00:00Z", "usage": None}])})
    added: list[Any] = []

    def describe() -> None:
        with engine.begin() as conn:
            added.extend(conn.execute(sql.UPSERT_DESCRIBED_LOTS, {"rows": json_rows(
                [{"job_id": job_id, "lot_id": "lot-0", "processed_images": IMAGES_PER_LOT,
                  "missing_images": [], "usage": None}])}).all())

    describing = threading.Thread(target=describe)
    describing.start()
    wait_for_a_lock_wait(engine, "the vision statement")  # for the lot's row
    completing.commit()
    completing.close()
    describing.join(10)
    assert not describing.is_alive()
    assert added == [(job_id, IMAGES_PER_LOT)]


def test_a_lot_first_written_by_another_replica_meanwhile_gets_its_images_counted(
        engine: Engine, apply: Apply, monkeypatch: pytest.MonkeyPatch) -> None:
    # The lot has no row yet: one replica's translation result writes it (completed, 0 images)
    # while the other projects its vision result. That statement found no row to read, waited on
    # the new one and wrote its images: the job never counted them (a flaky CI run of
    # test_two_instances_sharing_the_partitions_count_every_lot_once_and_announce_once).
    script = job_script(1)
    vision = [e for e in script.vision if isinstance(e.event, VisionCompleted)]
    translation = [e for e in script.translation if isinstance(e.event, TranslationCompleted)]
    apply(script.submissions[:1])  # the job only: its lot's row is not written yet
    holding, release = threading.Event(), threading.Event()
    settle = handlers.settle_jobs  # type: ignore[attr-defined]  # the name the handler calls

    def held_settle(conn: Any, changes: Any, **options: Any) -> list[str]:
        if threading.current_thread().name == "completing":
            holding.set()
            release.wait(10)  # the completion's transaction stays open meanwhile
        return settle(conn, changes, **options)

    monkeypatch.setattr(handlers, "settle_jobs", held_settle)
    completing = threading.Thread(target=apply, args=(translation,), name="completing")
    describing = threading.Thread(target=apply, args=(vision,), name="describing")
    completing.start()
    assert holding.wait(10)
    describing.start()
    wait_for_a_lock_wait(engine, "the vision projection")  # for the row, or for the job
    release.set()
    completing.join(10)
    describing.join(10)
    assert job_row(engine, script.job_id)["images_processed"] == IMAGES_PER_LOT - 1
