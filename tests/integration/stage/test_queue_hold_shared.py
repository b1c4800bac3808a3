"""The hold after OpenAI's enqueued-token queue refused a batch, as PostgreSQL keeps it: one row a
stage, which every instance's store reads and changes in turn (`stage/core/queue_hold.py` decides)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, text

from lotlens_common.stage.adapters.postgres_store import PostgresWorkStore
from lotlens_common.stage.core.queue_hold import FIRST_HOLD_S
from lotlens_common.stage.work import TranslationWork, VisionWork

pytestmark = pytest.mark.integration


def _row(engine: Engine, stage: str) -> tuple[int, float]:
    """The stage's refusals in a row, and the seconds its hold has left."""
    with engine.connect() as conn:
        refusals, left_s = conn.execute(text(
            "SELECT refusals, extract(epoch FROM held_until - now()) FROM stage_queue_holds "
            " WHERE stage = :stage"), {"stage": stage}).one()
    return int(refusals), float(left_s)


def test_a_refusal_noted_by_one_instance_holds_every_instance_of_that_stage_only(engine: Engine) -> None:
    first, second = (PostgresWorkStore(engine, "vision", VisionWork) for _ in range(2))
    translator = PostgresWorkStore(engine, "translation", TranslationWork)
    created = time.time() - 5
    assert second.queue_held().left_s == 0
    assert first.note_queue_refused(created) == FIRST_HOLD_S
    assert FIRST_HOLD_S - 10 < second.queue_held().left_s <= FIRST_HOLD_S
    assert translator.queue_held().left_s == 0
    # A batch in flight when the queue refused: refused too, it tells nothing new.
    assert second.note_queue_refused(created - 1) is None
    refusals, left_s = _row(engine, "vision")
    assert refusals == 1 and FIRST_HOLD_S - 10 < left_s <= FIRST_HOLD_S


def test_a_batch_created_since_the_refusal_and_admitted_ends_the_series_for_every_instance(
        engine: Engine) -> None:
    first, second = (PostgresWorkStore(engine, "vision", VisionWork) for _ in range(2))
    first.note_queue_refused(time.time() - 5)
    second.note_queue_admitted(time.time() - 60)  # admitted before the queue filled: no news
    assert _row(engine, "vision")[0] == 1
    second.note_queue_admitted(time.time() + 1)
    assert _row(engine, "vision")[0] == 0
    # The hold in force runs out; the next refusal starts at a minute again.
    assert first.queue_held().left_s > 0


def test_instances_noting_the_same_batches_refused_at_once_hold_back_once(engine: Engine) -> None:
    # Each batch in flight when the queue filled comes back refused: without the row's lock two
    # instances both read no refusal yet and both wrote the first, or each doubled the hold.
    created = time.time() - 5
    stores = [PostgresWorkStore(engine, "vision", VisionWork) for _ in range(4)]
    with ThreadPoolExecutor(len(stores)) as pool:
        holds = list(pool.map(lambda store: store.note_queue_refused(created), stores))
    assert sorted(holds, key=lambda hold: hold or 0) == [None, None, None, FIRST_HOLD_S]
    assert _row(engine, "vision")[0] == 1
