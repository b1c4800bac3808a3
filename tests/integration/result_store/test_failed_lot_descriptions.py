"""A lot failed at translation keeps the descriptions its LotFailed carries, once, and a completed
lot a stray LotFailed reaches keeps its own: the result-store's projection on real PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from lotlens_common.envelope import Envelope
from lotlens_common.events import LotFailed, TranslationCompleted
from lotlens_common.tables import descriptions
from tests.integration.result_store.support import Apply, job_row, job_script, lot_rows

pytestmark = pytest.mark.integration


def texts(engine: Engine, job_id: str) -> dict[str, dict[str, str]]:
    """The job's descriptions by lot and language."""
    found: dict[str, dict[str, str]] = {}
    with engine.connect() as conn:
        for row in conn.execute(select(descriptions).where(descriptions.c.job_id == job_id)).mappings():
            found.setdefault(row["lot_id"], {})[row["language"]] = row["damages"]
    return found


def test_a_lot_failed_at_translation_keeps_its_english_and_a_completed_lot_its_texts(
        engine: Engine, apply: Apply) -> None:
    script = job_script(2)  # languages en, ru
    done, failing = script.lot_ids
    apply(script.submissions + script.vision)
    apply([e for e in script.translation
           if not isinstance(e.event, TranslationCompleted) or e.event.lot_id == done])

    def failed(lot_id: str) -> Envelope:
        return Envelope(client_id=script.client_id, event=LotFailed(
            job_id=script.job_id, lot_id=lot_id, stage="translation", total_lots=2,
            reason="gave up after 3 attempts", descriptions={"en": f"<p>{lot_id} kept</p>"}))

    for _ in range(2):  # delivered again: nothing changes
        apply([failed(failing), failed(done)])
        assert texts(engine, script.job_id) == {
            done: {"en": f"<p>{done} en</p>", "ru": f"<p>{done} ru</p>"},
            failing: {"en": f"<p>{failing} kept</p>"}}
        rows = lot_rows(engine, script.job_id)
        assert (rows[done]["status"], rows[failing]["status"]) == ("completed", "failed")
    job = job_row(engine, script.job_id)
    assert (job["status"], job["processed_lots"], job["failed_lots"]) == ("completed", 1, 1)
