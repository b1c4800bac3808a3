"""Holding new batches back while OpenAI's enqueued-token queue is full: the rule, and the submit step
that heeds it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from lotlens_common.stage.core.queue_hold import FIRST_HOLD_S, LONGEST_HOLD_S, QueueHold
from lotlens_common.stage.submit import flush_due
from tests.unit.stage.conftest import World, lots

T0 = 1_800_000_000.0


def test_each_refusal_in_a_row_doubles_the_hold_up_to_fifteen_minutes() -> None:
    hold = QueueHold()
    holds = [hold.refused(T0 + 1000 * i, T0 + 1000 * i + 5) for i in range(6)]
    assert holds == [FIRST_HOLD_S, 120, 240, 480, LONGEST_HOLD_S, LONGEST_HOLD_S]
    assert hold.holds(T0 + 5000 + 5 + LONGEST_HOLD_S - 1)
    assert not hold.holds(T0 + 5000 + 5 + LONGEST_HOLD_S)


def test_batches_already_in_flight_when_the_queue_refused_do_not_lengthen_the_hold() -> None:
    hold = QueueHold()
    assert hold.refused(T0, T0 + 10) == FIRST_HOLD_S
    assert hold.refused(T0 + 2, T0 + 11) is None  # created before the refusal was known
    assert hold.refused(T0 + 80, T0 + 90) == 120  # the try after the hold, refused again


def test_only_a_batch_created_since_the_refusal_and_admitted_ends_the_series() -> None:
    hold = QueueHold()
    hold.refused(T0, T0 + 10)
    hold.admitted(T0 + 5)  # admitted before the queue filled: says nothing of it now
    assert hold.refused(T0 + 80, T0 + 90) == 120
    hold.admitted(T0 + 200)
    assert hold.refused(T0 + 300, T0 + 310) == FIRST_HOLD_S


def test_refusals_in_a_row_for_days_keep_the_longest_hold() -> None:
    # The count is kept in PostgreSQL now, past restarts: after 1,024 refusals in a row (about ten
    # days of a full queue) 2.0 ** refusals overflowed, and every refused batch's look raised.
    hold = QueueHold(refusals=1024)
    assert hold.refused(T0, T0 + 5) == LONGEST_HOLD_S


def test_a_hold_another_instance_records_mid_round_stops_the_rounds_next_claim(world: World) -> None:
    # The round read the hold once: an instance that had not seen another's refusal went on to claim,
    # check and upload each due shard, every batch refused the same way.
    world.store.add(lots(1))
    world.store.add(lots(1, job_id="job-2"))
    claim = world.store.claim

    def refused_elsewhere_meanwhile(*args: Any, **kwargs: Any) -> Any:
        taken = claim(*args, **kwargs)
        world.store.queue_hold.refused(time.time(), time.time())
        return taken

    world.store.claim = refused_elsewhere_meanwhile  # type: ignore[method-assign]
    asyncio.run(flush_due(world.stage))
    assert len(world.batches.batches) == 1
