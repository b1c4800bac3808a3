"""The stage's loop under SIGTERM: a stopping process sends no further shard, leaves what it was
building `building` (between chunks, or cancelling the chunk whose images it checks), and the
next process sends it. Each within the pod's grace period, whatever the image hosts do."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from lotlens_common.images import ImageCheck
from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.runner import run_stage_loop
from lotlens_vision_batcher.vision_stage import RecentChecks, VisionStage
from tests.unit.stage.conftest import World, dead_images_unreachable, lots


def test_a_stopping_round_sends_no_further_shard_and_the_next_process_sends_it(world: World) -> None:
    # SIGTERM was seen only between rounds: a round of many shards (or one of 50,000 lots with
    # slow image hosts) outlasted the pod's grace period, and the SIGKILL cut it anywhere.
    world.batches.finish = None
    world.store.add(lots(2, job_id="job-1") + lots(2, job_id="job-2"))
    create, stop = world.batches.create_batch, threading.Event()

    async def create_then_stop(input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        stop.set()  # SIGTERM arrives while the first batch is created
        return await create(input_file_id, metadata)

    world.batches.create_batch = create_then_stop  # type: ignore[method-assign]
    run_stage_loop(world.stage, stop)
    assert len(world.submitted()) == 1 and len(world.store.shards("submitted")) == 1
    world.batches.create_batch = create  # type: ignore[method-assign]
    world.restart()
    world.rounds()
    assert sorted(lot for event in world.submitted() for lot in event.lot_ids) == sorted(world.store.rows)


def test_a_shard_stopped_between_its_chunks_is_left_building_and_recovered(world: World) -> None:
    world.settings = world.settings.model_copy(update={"enqueued_token_limit": 0})  # one shard
    world.batches.finish = None
    world.store.add(lots(2500))  # three chunks of image checks
    stop = threading.Event()

    async def checks_then_stop(urls: Sequence[str]) -> ImageCheck:
        stop.set()
        return await dead_images_unreachable(urls)

    spec = VisionStage("vision", ModelSettings(), checks_then_stop, recent=RecentChecks(ttl_s=0))
    run_stage_loop(Stage(spec, world.store, world.batches, world.publisher, world.settings), stop)
    assert world.batches.batches == {} and len(world.store.shards("building")) == 1
    world.restart()
    world.rounds()
    [event] = world.submitted()
    assert len(event.lot_ids) == 2500


def test_a_shard_stopped_while_a_chunk_checks_its_images_is_left_building_and_recovered(
        world: World) -> None:
    # The stop waited for the chunk's checks (minutes against slow image hosts, past the pod's
    # grace period): the check now in progress is cancelled, and nothing of the chunk is written.
    world.batches.finish = None
    world.store.add(lots(3))
    stop, cancelled = threading.Event(), threading.Event()

    async def checks_that_hang(urls: Sequence[str]) -> ImageCheck:
        stop.set()  # SIGTERM arrives while the host has not answered
        try:
            await asyncio.sleep(10)  # a slow host; the old stop waited it out
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return await dead_images_unreachable(urls)

    spec = VisionStage("vision", ModelSettings(), checks_that_hang, recent=RecentChecks(ttl_s=0))
    run_stage_loop(Stage(spec, world.store, world.batches, world.publisher, world.settings), stop)
    assert cancelled.is_set() and world.publisher.events == [] and world.batches.batches == {}
    assert len(world.store.shards("building")) == 1
    world.restart()
    world.rounds()
    [event] = world.submitted()
    assert len(event.lot_ids) == 3
