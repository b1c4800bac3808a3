"""A lot's two updates (its vision result, its translation) are HOT: they write no index entry.

They change no column an index or an index's predicate reads, and `lots` pages keep room for the
new row versions (`tables.py`, fillfactor). An index on a column they set, or pages filled again,
sends them to other pages, each writing an entry in every index of the table: this fails then.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from sqlalchemy import Engine, text

from lotlens_common.envelope import Envelope
from lotlens_result_store.completion import lock_batch
from lotlens_result_store.handlers import apply_batch
from tests.integration.result_store.support import job_script, lot_rows

pytestmark = pytest.mark.integration


def _updates(engine: Engine, envelopes: Sequence[Envelope]) -> tuple[int, int]:
    """Applies one batch as the handler does; the updates of `lots` it made, and how many were HOT
    (the transaction's own counters, read before its commit)."""
    with engine.begin() as conn:
        lock_batch(conn, [envelope.job_id for envelope in envelopes])
        apply_batch(conn, envelopes, live=True)
        row = conn.execute(text("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
                                "WHERE relid = 'lots'::regclass")).one()
    return int(row[0]), int(row[1])


def test_a_lots_vision_result_and_translation_update_it_in_place(engine: Engine) -> None:
    script = job_script(60)  # with webhooks: `ix_lots_webhook_order` holds every lot
    assert _updates(engine, script.submissions) == (0, 0)  # COPYed
    # Every update HOT, each lot's at least. Not exactly 60: one full run of 2,990 tests counted 64
    # (all HOT) in the vision batch's transaction, which 8 runs of this test alone never did.
    for batch in (script.vision, script.translation):
        updated, hot = _updates(engine, batch)
        assert hot == updated >= 60, (updated, hot)
    lots = lot_rows(engine, script.job_id).values()
    assert {(lot["status"], lot["processed_images"], tuple(lot["usage"] or ())) for lot in lots} == {
        ("completed", 2, ())}
