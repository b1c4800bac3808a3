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


_COUNTERS = text("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
                 "WHERE relid = 'lots'::regclass")


def _updates(engine: Engine, envelopes: Sequence[Envelope]) -> tuple[int, int]:
    """Applies one batch as the handler does; the updates of `lots` it made, and how many were HOT.

    Counted from the start of its transaction: PostgreSQL 15 flushes a session's counters at most
    once a second, and `pg_stat_xact_*` adds the session's earlier transactions not flushed yet (a
    full run counted 64 updates for this test's 60 lots). Nothing is flushed inside a transaction."""
    with engine.begin() as conn:
        before = conn.execute(_COUNTERS).one()
        lock_batch(conn, [envelope.job_id for envelope in envelopes])
        apply_batch(conn, envelopes, live=True)
        after = conn.execute(_COUNTERS).one()
    return int(after[0] - before[0]), int(after[1] - before[1])


def test_a_lots_vision_result_and_translation_update_it_in_place(engine: Engine) -> None:
    script = job_script(60)  # with webhooks: `ix_lots_webhook_order` holds every lot
    assert _updates(engine, script.submissions) == (0, 0)  # COPYed
    assert _updates(engine, script.vision) == (60, 60)  # each lot's row once, in place
    assert _updates(engine, script.translation) == (60, 60)
    lots = lot_rows(engine, script.job_id).values()
    assert {(lot["status"], lot["processed_images"], tuple(lot["usage"] or ())) for lot in lots} == {
        ("completed", 2, ())}


# Two transactions of the session, the first one's counters flushed as it ends (the second's are
# then kept: a flush is at most once a second).
_TOUCH = "UPDATE lots SET updated_at = updated_at WHERE job_id = :job_id AND lot_id < 'lot-00004'"


def test_a_batch_counts_its_own_updates_right_after_its_session_made_others(engine: Engine) -> None:
    script = job_script(60)
    _updates(engine, script.submissions)
    for flush in (True, False):
        with engine.begin() as conn:  # the pool's one connection, which `_updates` takes next
            conn.execute(text(_TOUCH), {"job_id": script.job_id})
            if flush:
                conn.execute(text("SELECT pg_stat_force_next_flush()"))
    # The counts alone: the touched lots' extra row versions may leave their pages no room for a
    # HOT update while another session's snapshot holds back pruning (a full run saw 57 of 60).
    assert _updates(engine, script.vision)[0] == 60
    assert _updates(engine, script.translation)[0] == 60
