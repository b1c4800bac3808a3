"""A lot failed at translation keeps the descriptions its LotFailed carries, once, and no more; a
completed lot a stray LotFailed reaches keeps its own: the result-store's projection on real
PostgreSQL, live and rebuilt."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from lotlens_common.envelope import Envelope
from lotlens_common.events import LotFailed, TranslationCompleted
from lotlens_common.read_models import get_job, iter_lot_results
from lotlens_common.tables import descriptions
from lotlens_result_store.handlers import apply_batch
from tests.conftest import Infra, own_schema
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


def test_a_translation_projected_after_its_lot_failed_adds_no_texts_live_or_rebuilt(
        infra: Infra, engine: Engine, apply: Apply) -> None:
    script = job_script(2, languages=("en", "de", "ru"))
    failing = script.lot_ids[1]
    late = next(e for e in script.translation
                if isinstance(e.event, TranslationCompleted) and e.event.lot_id == failing)
    failed = Envelope(client_id=script.client_id, event=LotFailed(
        job_id=script.job_id, lot_id=failing, stage="translation", total_lots=2,
        reason="gave up after 3 attempts", descriptions={"en": f"<p>{failing} en</p>",
                                                         "de": f"<p>{failing} de</p>"}))
    answers = [e for e in script.translation if e is not late]
    log = [*script.submissions, *script.vision, *answers, failed, late]
    apply(log[:-2])
    apply([failed])
    apply([late])  # a late answer, or one replayed: the lot stays failed with what it had
    with own_schema(infra, engine) as rebuilt:
        with rebuilt.begin() as conn:  # a rebuild reads the log in order, a batch at a time
            apply_batch(conn, log[:-1])
        with rebuilt.begin() as conn:
            apply_batch(conn, log[-1:])
        for read_models in (engine, rebuilt):
            assert texts(read_models, script.job_id)[failing] == {"en": f"<p>{failing} en</p>",
                                                                  "de": f"<p>{failing} de</p>"}
            with read_models.connect() as conn:
                job = get_job(conn, script.job_id)
                assert job is not None
                lot = {lot["lot_id"]: lot for lot in iter_lot_results(conn, job, stream=False)}[failing]
            assert lot["status"] == "failed" and lot["descriptions"] == []
            assert [d["language"] for d in lot["partial_descriptions"]] == ["en", "de"]
            assert lot["missing_languages"] == ["ru"]
