"""Direct mode with more than one instance, and a collection that fails: a batch another live
instance made is not "lost", and its results are still there when its collection is retried.
Either way every lot was sent to the model again (on a paid endpoint, paid twice) and its result
published a second time under a new event id."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lotlens_common.events import LotFailed, VisionCompleted
from lotlens_common.model.errors import ModelUnavailableError, ModelUnreachableError
from lotlens_common.model.settings import ModelSettings
from lotlens_common.producer import PublishError
from lotlens_common.stage.adapters import direct
from lotlens_common.stage.adapters.direct import FILES_KEPT_S, DirectBatches
from lotlens_common.stage.collect import watch
from lotlens_common.stage.metrics import OPENAI_ERRORS
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.recover import recover_building
from lotlens_common.stage.runner import housekeep, step
from lotlens_common.stage.submit import flush_due
from lotlens_vision_batcher.vision_stage import RecentChecks, VisionStage
from tests.unit.stage.conftest import World, dead_images_unreachable, lots
from tests.unit.stage.fakes import described


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self.calls += 1
        return described(body["input"][0]["content"][-1]["text"], body)


def instance(world: World, call: Counting, folder: Path,
             batches: type[DirectBatches] = DirectBatches) -> Stage[Any]:
    folder.mkdir(exist_ok=True)
    spec = VisionStage("vision", ModelSettings(), dead_images_unreachable, recent=RecentChecks(ttl_s=0))
    return Stage(spec, world.store, batches(call, 4, folder), world.publisher, world.settings)


def results(world: World) -> list[str]:
    return sorted(event.lot_id for event in world.of(VisionCompleted))


def each_lot_sent_and_described_once(world: World, call: Counting) -> bool:
    return call.calls == 3 and results(world) == ["job-1-lot-0", "job-1-lot-1", "job-1-lot-2"]


def test_an_instance_leaves_a_batch_another_live_instance_made_to_it(world: World, tmp_path: Path) -> None:
    call = Counting()
    first, second = instance(world, call, tmp_path / "a"), instance(world, call, tmp_path / "b")
    world.store.add(lots(3))
    asyncio.run(flush_due(first))  # sent and answered; its instance collects it at its next watch
    asyncio.run(step(second, watching=True))
    asyncio.run(step(first, watching=True))
    asyncio.run(step(second, watching=True))
    assert each_lot_sent_and_described_once(world, call)


def test_a_collection_that_failed_to_publish_finds_the_results_again(world: World, tmp_path: Path) -> None:
    call = Counting()
    stage = instance(world, call, tmp_path / "a")
    world.store.add(lots(3))
    asyncio.run(flush_due(stage))
    publish = world.publisher.publish

    def refused(*_args: object) -> None:
        world.publisher.publish = publish  # type: ignore[method-assign]
        raise PublishError("Kafka did not acknowledge")

    world.publisher.publish = refused  # type: ignore[method-assign, assignment]
    asyncio.run(step(stage, watching=True))  # the collection fails: nothing published, nothing settled
    asyncio.run(step(stage, watching=True))
    asyncio.run(step(stage, watching=True))
    assert each_lot_sent_and_described_once(world, call)


def test_a_restarted_process_collects_its_predecessors_batch(world: World, tmp_path: Path) -> None:
    call = Counting()
    before = instance(world, call, tmp_path / "a")
    world.store.add(lots(3))
    asyncio.run(flush_due(before))  # answered, then the process dies before collecting
    after = instance(world, call, tmp_path / "a")  # a new process on the same folder
    asyncio.run(step(after, watching=True))
    assert each_lot_sent_and_described_once(world, call)
    assert list((tmp_path / "a").iterdir()) == []  # its files went with its collection


class Sizes(DirectBatches):
    """Direct batches that note how many requests each one sends."""

    sizes: list[int]

    async def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        self.sizes.append(len((self.work_dir / input_file_id).read_bytes().splitlines()))
        return await super().create_batch(input_file_id, metadata)


def test_direct_mode_sends_a_big_job_in_shards_of_ten_rounds(world: World, tmp_path: Path) -> None:
    # One shard of the whole job was sent while the stage loop waited: a 50,000-lot job outlasted
    # the liveness probe, and each restart sent it all again.
    settings = world.settings.model_copy(update={"direct_concurrency": 2}).direct_mode()
    call = Counting()
    batches = Sizes(call, settings.direct_concurrency, tmp_path)
    batches.sizes = []
    spec = VisionStage("vision", ModelSettings(), dead_images_unreachable, recent=RecentChecks(ttl_s=0))
    stage = Stage(spec, world.store, batches, world.publisher, settings)
    world.store.add(lots(45))
    for _ in range(4):
        asyncio.run(flush_due(stage))
    assert batches.sizes == [20, 20, 5] and call.calls == 45


def test_answers_no_collection_deleted_go_after_thirty_days_at_the_next_batch(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Kept until collected (a stage down for days still reads them), but a batch never collected
    # (no shard took it up: its job cancelled before recovery found it, say) is not kept for good.
    call = Counting()
    stage = instance(world, call, tmp_path / "a")
    world.store.add(lots(1))
    asyncio.run(flush_due(stage))
    uncollected = {path.name for path in (tmp_path / "a").iterdir()}
    assert len(uncollected) == 3  # its record, output and error files
    monkeypatch.setattr(direct, "time", SimpleNamespace(time=lambda: time.time() + FILES_KEPT_S + 60))
    world.store.add(lots(1, job_id="job-2"))
    asyncio.run(flush_due(stage))
    left = {path.name for path in (tmp_path / "a").iterdir()}
    assert len(left) == 3 and not left & uncollected


class Down(Counting):
    """A server that is not there while `down` (connection refused), then answers."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    async def __call__(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.down:
            raise ModelUnreachableError("the model API is unreachable: Connection refused")
        return await super().__call__(body)


def test_a_server_down_for_longer_than_the_attempts_leaves_its_lots_waiting_and_says_so(
        world: World, tmp_path: Path) -> None:
    # Every line of a round failed with a 503 of our own making, counted as an attempt: a vLLM
    # restarting for a few minutes failed every lot in flight for good (after `max_attempts`
    # rounds), and no OpenAI error was counted, so LotLensOpenAIUnreachable could not fire. A
    # round nothing answered is now a batch not made: the shard stays `building`, and recovery
    # sends it again once the server is back, as in batch mode.
    call = Down()
    stage = instance(world, call, tmp_path / "a")
    world.store.add(lots(3))
    before = OPENAI_ERRORS.labels(stage="vision", operation="batches", kind="unavailable")._value.get()
    for _ in range(world.settings.max_attempts + 2):
        asyncio.run(flush_due(stage))
        asyncio.run(housekeep(stage))
        asyncio.run(step(stage, watching=True))
    assert world.of(LotFailed) == []
    assert OPENAI_ERRORS.labels(stage="vision", operation="batches", kind="unavailable")._value.get() > before
    call.down = False
    asyncio.run(housekeep(stage))
    asyncio.run(step(stage, watching=True))
    assert each_lot_sent_and_described_once(world, call)


class Restarting(Counting):
    """A server that goes down mid-round (restarting) and refuses the rest: after one answer, or
    with `crash`, on the request whose notes hold it, which it drops (it brought the server down)."""

    def __init__(self, crash: str | None = None) -> None:
        super().__init__()
        self.crash, self.up, self.dropped = crash, True, 0

    async def __call__(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if not self.up:
            raise ModelUnreachableError("the model API is unreachable: Connection refused")
        if self.crash is None:
            self.up = False
        elif self.crash in body["input"][0]["content"][-1]["text"]:
            self.up, self.dropped = False, self.dropped + 1
            raise ModelUnavailableError("the model API dropped the call, then refused it")
        return await super().__call__(body)


def unavailable_errors() -> float:
    return float(OPENAI_ERRORS.labels(stage="vision", operation="batches", kind="unavailable")._value.get())


def test_lines_a_server_restarting_mid_round_refused_go_again_without_using_attempts(
        world: World, tmp_path: Path) -> None:
    # Each refused line was a 503, an attempt: a server that went down mid-round twice failed a lot
    # it had never received ("gave up after 2 attempts"). Still counted for the unreachable alert.
    call = Restarting()
    stage = instance(world, call, tmp_path / "a")
    world.store.add(lots(3))
    assert len(asyncio.run(flush_due(stage))) == 1  # one line answered, two refused: a batch
    before = unavailable_errors()
    asyncio.run(watch(stage))
    assert unavailable_errors() == before + 2
    for _ in range(2):
        call.up = True
        asyncio.run(step(stage, watching=True))
    assert world.of(LotFailed) == [] and each_lot_sent_and_described_once(world, call)


def test_a_request_that_brings_the_server_down_each_time_still_fails_after_its_attempts(
        world: World, tmp_path: Path) -> None:
    # It reached the server each time: counted, it cannot be sent again for ever; the lines
    # refused behind it go again, uncounted, and are described once it has failed.
    call = Restarting(crash="Camry 0")
    stage = instance(world, call, tmp_path / "a")
    world.store.add(lots(3))
    for _ in range(world.settings.max_attempts + 1):
        call.up = True
        asyncio.run(step(stage, watching=True))
    assert [event.lot_id for event in world.of(LotFailed)] == ["job-1-lot-0"]
    assert call.dropped == world.settings.max_attempts
    assert results(world) == ["job-1-lot-1", "job-1-lot-2"]


class FullOnce(DirectBatches):
    """Direct batches whose first create fails writing its files (the work folder's disk full)."""

    failed = False

    async def create_batch(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        if not self.failed:
            self.failed = True
            raise OSError(28, "No space left on device")
        return await super().create_batch(input_file_id, metadata)


def test_a_direct_create_that_failed_is_sent_again_at_the_next_watch(world: World, tmp_path: Path) -> None:
    # Taken for an OpenAI create whose batch may land later, its shard waited 10 minutes: a direct
    # batch is made whole by the call, or not at all.
    call = Counting()
    stage = instance(world, call, tmp_path / "a", FullOnce)
    world.store.add(lots(3))
    for _ in range(3):
        asyncio.run(step(stage, watching=True))
    assert each_lot_sent_and_described_once(world, call)


class FailoverMidCreate(Counting):
    """A model whose first call meets PostgreSQL failing over: the builder's shard lock goes, and
    another instance, on its own folder, runs its recovery while the builder's create goes on."""

    def __init__(self, world: World, other: Stage[Any] | None = None) -> None:
        super().__init__()
        self.world, self.other = world, other

    async def __call__(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.other is not None:
            other, self.other = self.other, None
            self.world.store.locks.clear()  # the lock's session ended with the primary
            await recover_building(other)
        return await super().__call__(body)


def test_a_failover_during_a_direct_create_leaves_its_lots_to_that_create(
        world: World, tmp_path: Path) -> None:
    # The create was noted only once made (minutes of model calls): the other instance's recovery
    # saw no create asked, found no batch on its own folder and called the model for the same lots
    # again, while the first instance's answers, on a folder no other replica reads, went unused.
    call = FailoverMidCreate(world)
    first, second = instance(world, call, tmp_path / "a"), instance(world, call, tmp_path / "b")
    call.other = second
    world.store.add(lots(3))
    asyncio.run(flush_due(first))  # answered; its record refused, the lock being gone
    for _ in range(2):
        asyncio.run(step(first, watching=True))  # its recovery finds its batch on its folder
    assert call.calls == 3, f"the model called for {call.calls} lots"
    assert each_lot_sent_and_described_once(world, call)
