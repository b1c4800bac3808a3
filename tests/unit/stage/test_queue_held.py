"""What the stage does while OpenAI's enqueued-token queue holds its new batches back
(`core/queue_hold.py`): recovery builds nothing either, and the gauge tells on-call how long."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY, generate_latest

from lotlens_common.stage import submit
from tests.unit.stage.conftest import World, lots


class Crash(Exception):
    """The process dies here."""


def _scraped_hold(name: str = "lotlens_stage_queue_held_seconds", stage: str = "vision") -> float:
    """The stage's gauge `name` as Prometheus scrapes it (it must be exported)."""
    prefix = f'{name}{{stage="{stage}"}} '
    for line in generate_latest(REGISTRY).decode().splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    raise AssertionError(f"no {name} for {stage} is exported")


def _crash_after_claim(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A round whose process dies with its shard claimed: the shard is left `building`."""
    def die(name: str) -> None:
        if name == "vision.after_shard_claimed":
            raise Crash(name)

    monkeypatch.setattr(submit, "fault_point", die)
    world.store.add(lots(2))
    with pytest.raises(Crash):
        world.rounds()
    monkeypatch.undo()


def test_recovery_builds_no_batch_for_a_building_shard_while_the_queue_is_held(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _crash_after_claim(world, monkeypatch)
    assert world.store.note_queue_refused(time.time() - 5)  # another replica collected a refusal
    world.restart()
    world.housekeep()
    world.rounds(2)
    assert world.batches.batches == {}, "recovery created a batch while the queue was held"
    assert [shard.status for shard in world.store.shards_by_id.values()] == ["building"]
    world.store.queue_hold.until = 0.0  # the hold has run out
    world.rounds(2)
    assert len(world.batches.batches) == 1
    assert world.completed() == ["job-1-lot-0", "job-1-lot-1"]


def test_the_gauge_shows_the_seconds_the_hold_has_left_and_zero_once_it_ends(world: World) -> None:
    world.store.note_queue_refused(time.time() - 5)
    world.rounds()
    assert 50 < _scraped_hold() <= 60
    world.store.queue_hold.until = 0.0
    world.rounds()
    assert _scraped_hold() == 0


def test_the_held_seconds_count_down_between_reads_as_a_long_round_goes_on(world: World) -> None:
    # The gauge was the seconds left at the submit step's last read: a round collecting a big
    # batch or building one (minutes, its heartbeat beating) froze it, and on-call read a hold
    # that had run out as minutes to go.
    world.store.note_queue_refused(time.time() - 5)
    world.store.queue_hold.until = time.time() + 1.5
    world.rounds()
    assert 1.0 < _scraped_hold() <= 1.5
    time.sleep(1.6)  # no round reads the row meanwhile
    assert _scraped_hold() == 0


def test_the_refusals_in_a_row_stay_through_the_gaps_between_holds_until_a_batch_is_admitted(
        world: World) -> None:
    # The alert read the held seconds, 0 while each try is built and refused again: past 15 minutes
    # on big files, a queue full for hours never paged.
    refusals = "lotlens_stage_queue_refusals_in_a_row"
    world.store.note_queue_refused(time.time() - 5)
    world.rounds()
    assert _scraped_hold(refusals) == 1
    world.store.queue_hold.until = 0.0  # the hold has run out; the next try is being built
    world.rounds()
    assert _scraped_hold() == 0 and _scraped_hold(refusals) == 1
    world.store.note_queue_admitted(time.time() + 5)  # a batch created since got past validation
    world.rounds()
    assert _scraped_hold(refusals) == 0
