"""One job's image hosts that never answer must not hold another client's vision batch.

The vision stage checks every image of a shard before it writes the shard's file, and a round
builds its shards one after the other (the oldest job's first). A job whose lots point at a host
that accepts connections and never sends a byte (a tarpit) cost one full timeout per URL,
`image_check_concurrency` at a time: 50,000 lots of 20 such URLs held the vision-batcher for
~43 hours, and every other client's job waited behind it. Here the real image checker (over
loopback) and the stage's own round run against the in-memory store and OpenAI fakes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lotlens_common import images as images_module
from lotlens_common.events import LotFailed
from lotlens_common.images import RETRY_PAUSES_S
from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.ports import Stage
from lotlens_common.stage.record import JOB_KEY
from lotlens_common.stage.submit import flush_due
from lotlens_common.stage.work import LotWork, VisionWork
from lotlens_vision_batcher.config import VisionBatcherSettings
from lotlens_vision_batcher.vision_stage import VisionStage, image_checker
from tests.servers import SilentServer
from tests.unit.stage.fake_publisher import FakePublisher
from tests.unit.stage.fakes import FakeBatches, FakeStore

TIMEOUT_S, CONCURRENCY = 0.5, 4
# Each tarpit URL is tried three times (a read timeout is a passing failure), 0.5 s and 2 s apart:
# 4 s a URL, 4 at a time, 20 URLs: 20 s of checks before anything else was built.
TARPIT_LOTS, URLS_PER_LOT = 5, 4
PER_URL_S = (len(RETRY_PAUSES_S) + 1) * TIMEOUT_S + sum(RETRY_PAUSES_S)
ALL_TIMED_OUT_S = TARPIT_LOTS * URLS_PER_LOT / CONCURRENCY * PER_URL_S


def _settings(monkeypatch: pytest.MonkeyPatch, timeout_s: float = TIMEOUT_S) -> VisionBatcherSettings:
    monkeypatch.setenv("LOTLENS_ALLOW_LOOPBACK_URLS", "true")
    monkeypatch.setenv("LOTLENS_IMAGE_CHECK_TIMEOUT_S", str(timeout_s))
    monkeypatch.setenv("LOTLENS_IMAGE_CHECK_CONCURRENCY", str(CONCURRENCY))
    return VisionBatcherSettings()


def _job(job_id: str, client_id: str, urls_of: list[tuple[str, ...]]) -> list[LotWork[VisionWork]]:
    return [LotWork(job_id, f"{job_id}-lot-{i}", client_id, len(urls_of), 0,
                    VisionWork(additional_info="Camry", image_urls=urls, languages=("en",)))
            for i, urls in enumerate(urls_of)]


@dataclass
class World:
    """A tarpit job (client A, arrived first: the round plans it first) and a working one (client
    B) waiting at a vision stage with the real image checker; when each job's batch was created."""

    store: FakeStore
    publisher: FakePublisher
    stage: Stage[Any]
    created_at: dict[str, float] = field(default_factory=dict)

    def round(self) -> float:
        """One round of sending; when it began."""
        started = time.monotonic()
        asyncio.run(flush_due(self.stage))
        return started

    def failed(self) -> dict[str, str]:
        return {event.lot_id: event.reason for event in self.publisher.events if isinstance(event, LotFailed)}


def _world(tmp_path: Path, spec: VisionStage, tarpit: SilentServer, images: str, lots: int,
           urls_per_lot: int) -> World:
    store, batches, publisher = FakeStore(), FakeBatches(), FakePublisher()
    settings = StageSettings(window_s=0.0, max_attempts=2, work_dir=str(tmp_path))
    world = World(store, publisher, Stage(spec, store, batches, publisher, settings))
    dead = f"http://127.0.0.1:{tarpit.port}"
    store.add(_job("job-tarpit", "client-a", [tuple(f"{dead}/{lot}-{i}.png" for i in range(urls_per_lot))
                                              for lot in range(lots)]))
    store.add(_job("job-working", "client-b", [(f"{images}/front.png",)]))
    create = batches.create_batch

    async def timed_create(input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        world.created_at[metadata[JOB_KEY]] = time.monotonic()
        return await create(input_file_id, metadata)

    batches.create_batch = timed_create  # type: ignore[method-assign]
    return world


def test_a_job_on_a_tarpit_host_does_not_hold_another_clients_batch_until_every_url_timed_out(
        tmp_path: Path, tarpit: SilentServer, images: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = VisionStage("vision", ModelSettings(), image_checker(_settings(monkeypatch)))
    world = _world(tmp_path, spec, tarpit, images, TARPIT_LOTS, URLS_PER_LOT)
    started = world.round()

    assert "job-tarpit" not in world.created_at, "no lot of the tarpit job has a usable image"
    waited_s = world.created_at["job-working"] - started
    assert waited_s < ALL_TIMED_OUT_S / 2, (
        f"client B's batch was created {waited_s:.1f} s into the round, after {len(tarpit.accepted)} "
        f"connections to the tarpit (every tarpit URL timed out by {ALL_TIMED_OUT_S:.1f} s)")
    # The first tries (one a check place) got no answer: the host was down from then on.
    assert len(tarpit.accepted) <= CONCURRENCY
    # The tarpit job's lots end as today's timeouts ended them, only sooner.
    reason = f"none of the lot's {URLS_PER_LOT} images could be fetched"
    assert world.failed() == {f"job-tarpit-lot-{lot}": reason for lot in range(TARPIT_LOTS)}


def test_past_its_time_a_shards_unchecked_lots_wait_for_the_next_round_and_another_clients_batch_goes(
        tmp_path: Path, tarpit: SilentServer, images: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Hosts the failure memory cannot take down (each a name of its own, one wildcard DNS entry):
    # here the memory is off, and only the time a chunk's checks may take bounds the tarpit job.
    monkeypatch.setenv("LOTLENS_IMAGE_HOST_DOWN_AFTER", "0")
    monkeypatch.setattr(images_module, "RETRY_PAUSES_S", (0.1, 0.1))
    timeout_s, lots, per_lot = 0.3, 10, 2
    all_timed_out_s = lots * per_lot / CONCURRENCY * (3 * timeout_s + 0.2)
    spec = VisionStage("vision", ModelSettings(), image_checker(_settings(monkeypatch, timeout_s)),
                       check_budget_s=0.2)
    world = _world(tmp_path, spec, tarpit, images, lots, per_lot)
    started = world.round()

    waited_s = world.created_at["job-working"] - started
    assert waited_s < all_timed_out_s / 2, (
        f"client B's batch was created {waited_s:.1f} s into the round (every tarpit URL timed out by "
        f"{all_timed_out_s:.1f} s)")
    # The first lot's images, and those under way by the deadline (the next lot's), were checked.
    assert sorted(world.failed()) == ["job-tarpit-lot-0", "job-tarpit-lot-1"]
    waiting = {row.lot.lot_id: row.lot.attempts for row in world.store.rows.values()
               if row.status == "waiting"}
    assert waiting == {f"job-tarpit-lot-{lot}": 0 for lot in range(2, lots)}, "back unsent, no attempt used"
    for _ in range(lots):
        if not any(row.status == "waiting" for row in world.store.rows.values()):
            break
        world.round()
    assert world.failed() == {f"job-tarpit-lot-{lot}": f"none of the lot's {per_lot} images could be fetched"
                              for lot in range(lots)}
    assert "job-tarpit" not in world.created_at
