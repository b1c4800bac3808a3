"""A collected shard's outcomes are applied a chunk at a time, whatever each lot's outcome."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from lotlens_common.stage import settle
from lotlens_common.stage.ports import Closing, Settlement
from tests.unit.stage.conftest import World, lots
from tests.unit.stage.fakes import described


def _sizes(settlement: Settlement) -> int:
    return (len(settlement.done) + settlement.failures() + len(settlement.cancelled)
            + settlement.retried())


def _applied(world: World, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Each settlement applied: how many lots, and whether it closed the shard."""
    applied: list[tuple[int, bool]] = []
    apply = world.store.settle

    def recording(job_id: str, settlement: Settlement, closing: Closing | None = None) -> None:
        applied.append((_sizes(settlement), closing is not None))
        apply(job_id, settlement, closing)

    monkeypatch.setattr(world.store, "settle", recording)
    return applied


def test_every_kind_of_outcome_counts_towards_a_chunk_and_the_close_takes_the_rest(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settle, "CHUNK", 3)
    applied = _applied(world, monkeypatch)

    def answer(custom_id: str, body: Mapping[str, Any]) -> dict[str, Any] | tuple[int, str]:
        # Every other lot refused for good (400), every third answered a passing failure (retried).
        number = int(custom_id.rsplit("-", 1)[1])
        if number % 2:
            return 400, "invalid_request_error"
        if number % 3 == 0:
            return 500, "server_error"
        return described(custom_id, body)

    world.batches.answer = answer
    world.store.add(lots(11))
    world.rounds()

    # After two chunks 5 lots are left, less than two chunks with the third: the close takes them.
    assert applied == [(3, False), (3, False), (5, True)]
    statuses = list(world.store.statuses().values())
    assert (statuses.count("done"), statuses.count("failed")) == (4, 5)  # the other 2 went again


def test_a_shard_of_less_than_two_chunks_is_settled_by_its_close_alone(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # A chunk applied before the close writes each of its lots `done`: a shard of 9,000 lots wrote
    # 5,000 rows one by one, only for the close, a moment later, to settle the 4,000 others.
    monkeypatch.setattr(settle, "CHUNK", 3)
    applied = _applied(world, monkeypatch)
    world.store.add(lots(5))
    world.rounds()
    assert applied == [(5, True)]
    assert set(world.store.statuses().values()) == {"done"}
