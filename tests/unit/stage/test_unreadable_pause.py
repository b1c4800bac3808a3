"""A batch the stage cannot read by id holds it paused through restarts, new replicas and its own
recovery: nothing built under the current key may make the batch look lost while it still runs
(in-memory ports)."""

from __future__ import annotations

import itertools
import time

import pytest

from lotlens_common.model.errors import ModelUnavailableError
from lotlens_common.stage import submit
from lotlens_common.stage.record import JOB_KEY
from tests.unit.stage.conftest import World, lots
from tests.unit.stage.fakes import FakeBatches
from tests.unit.stage.test_runner_recovery import Crash


def another_project() -> FakeBatches:
    """OpenAI as a key of another project sees it: none of the first project's batches (404),
    its own batches made from now on."""
    return FakeBatches(finish=None, created_at=time.time(), _ids=itertools.count(1000))


def _job_1_running_in_the_first_project(world: World) -> dict[str, object]:
    world.batches.finish = None
    world.store.add(lots(2))
    world.rounds()
    [batch] = world.batches.batches.values()
    return batch


def test_a_key_of_another_project_does_not_take_the_running_batch_for_lost_by_a_batch_it_just_made(
        world: World) -> None:
    # The first round of a process with the new key created job-2's batch in project B, then read
    # job-1's batch (404) and listed B's batches: job-2's, "ours", so job-1's was taken for lost and
    # its lots sent again while project A still ran them (and billed them).
    running = _job_1_running_in_the_first_project(world)
    world.store.add(lots(2, job_id="job-2"))
    project_b = another_project()
    world.restart(project_b)
    world.housekeep()
    world.rounds(3)
    assert running["status"] == "validating"  # still running in project A
    assert world.store.statuses()["job-1-lot-0"] == "submitted"
    assert [b["metadata"][JOB_KEY] for b in project_b.batches.values()] == ["job-2"]
    [shard] = [s for s in world.store.shards("submitted") if s.job_id == "job-1"]
    assert world.stage.unreadable.keys() == {shard.shard_id}
    assert "none of our batches created before" in (shard.unreadable or "")


def test_a_restart_holds_the_pause_recorded_on_the_shard_before_building_anything(world: World) -> None:
    # The pause lived in the process's memory only: the restarted process built job-2's batch in
    # project B at its first round, before reading job-1's batch again.
    _job_1_running_in_the_first_project(world)
    project_b = another_project()
    world.restart(project_b)
    world.rounds(2)
    assert world.stage.unreadable
    world.store.add(lots(2, job_id="job-2"))
    world.restart(project_b)  # a pod restart (or a new replica): same key, same tables
    world.rounds()
    assert world.stage.unreadable and project_b.batches == {}
    assert world.store.statuses() == {"job-1-lot-0": "submitted", "job-1-lot-1": "submitted",
                                      "job-2-lot-0": "waiting", "job-2-lot-1": "waiting"}


def test_a_pause_taken_up_from_the_shard_ends_once_its_batch_is_read_again(world: World) -> None:
    # Back on the first project's key (what the runbook says to do until its batches finish), the
    # batch is read: the pause must end then, not when the batch finishes hours later.
    project_a = world.batches
    _job_1_running_in_the_first_project(world)
    world.restart(another_project())
    world.rounds()
    world.restart(project_a)
    world.store.add(lots(1, job_id="job-2"))
    world.rounds(2)
    assert not world.stage.unreadable
    assert all(shard.unreadable is None for shard in world.store.shards("submitted"))
    assert len(project_a.batches) == 2  # job-2 sent in the same project, job-1's batch untouched


def test_recovery_builds_no_shard_while_a_batch_cannot_be_read(world: World) -> None:
    # job-2's shard, left building by a failed upload, was built in project B by the next watch's
    # recovery although the stage was paused; listed, it made job-1's batch look lost.
    _job_1_running_in_the_first_project(world)
    project_b = another_project()
    project_b.errors["upload"] = [ModelUnavailableError("HTTP 502")]
    world.restart(project_b)
    world.store.add(lots(2, job_id="job-2"))
    world.rounds()  # job-2's upload fails (502), its shard stays building; job-1's batch 404: paused
    assert world.stage.unreadable
    world.rounds(2)
    world.housekeep()
    assert project_b.batches == {}
    assert world.store.statuses()["job-1-lot-0"] == "submitted"
    assert [s.job_id for s in world.store.shards("building")] == ["job-2"]


def test_recovery_adopts_a_shards_batch_while_paused(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Adopting builds nothing: a batch that exists is put on record, paused or not.
    _job_1_running_in_the_first_project(world)
    [shard_1] = world.store.shards("submitted")

    def die(name: str) -> None:
        if name == "vision.after_batch_created":
            raise Crash(name)

    monkeypatch.setattr(submit, "fault_point", die)
    world.store.add(lots(1, job_id="job-2"))
    with pytest.raises(Crash):
        world.rounds()  # job-2's batch made, the process killed before it was on record
    monkeypatch.undo()
    world.store.note_unreadable(shard_1.shard_id, "reading it answered 404; the listing shows none")
    world.restart()
    world.housekeep()
    assert world.stage.unreadable.keys() == {shard_1.shard_id}
    assert [s.job_id for s in world.store.shards("submitted")] == ["job-1", "job-2"]
    assert len(world.batches.batches) == 2


def test_the_stages_batches_are_listed_once_a_round_however_many_cannot_be_read(world: World) -> None:
    # Each unreadable shard listed the stage's batches itself (up to 50 pages) at every poll.
    world.batches.finish = None
    for job in ("job-1", "job-2", "job-3"):
        world.store.add(lots(1, job_id=job))
        world.rounds()
    world.restart(another_project())
    world.rounds()
    assert len(world.stage.unreadable) == 3
    assert world.stage.batches.pages_listed == 1  # type: ignore[attr-defined]
