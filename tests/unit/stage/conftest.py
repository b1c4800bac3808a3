"""A vision stage wired to in-memory ports."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY, generate_latest

from lotlens_common.events import Event, LotFailed, VisionBatchSubmitted, VisionCompleted
from lotlens_common.images import ImageCheck
from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage import metrics
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.key import key_refused
from lotlens_common.stage.ports import BatchesPort, Stage
from lotlens_common.stage.record import batch_metadata
from lotlens_common.stage.runner import housekeep, step
from lotlens_common.stage.work import LotWork, VisionWork
from lotlens_vision_batcher.vision_stage import RecentChecks, VisionStage
from tests.unit.stage.fake_publisher import FakePublisher
from tests.unit.stage.fakes import FakeBatches, FakeStore


async def dead_images_unreachable(urls: Sequence[str]) -> ImageCheck:
    return ImageCheck(valid=tuple(u for u in urls if "dead" not in u),
                      unreachable=tuple(u for u in urls if "dead" in u))


def scraped(name: str, stage: str = "vision", **labels: str) -> float:
    """The stage's gauge `name` (of these further labels) as Prometheus scrapes it (it must be exported)."""
    pairs = ",".join(f'{key}="{value}"' for key, value in {"stage": stage, **labels}.items())
    prefix = f"{name}{{{pairs}}} "
    for line in generate_latest(REGISTRY).decode().splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    raise AssertionError(f"no {prefix}is exported")


def lots(count: int, job_id: str = "job-1", notes: str = "Camry") -> list[LotWork[VisionWork]]:
    return [LotWork(job_id, f"{job_id}-lot-{i}", "c1", count, 0, VisionWork(
        additional_info=f"{notes} {i}", image_urls=(f"https://img/{job_id}/{i}.jpg",), languages=("en",)))
        for i in range(count)]


@dataclass
class World:
    """A stage and its fakes; `restart()` is a new process on the same store and OpenAI."""

    store: FakeStore
    batches: FakeBatches
    publisher: FakePublisher
    settings: StageSettings
    stage: Stage[Any]

    def restart(self, batches: BatchesPort | None = None, name: str = "vision") -> None:
        spec = VisionStage("vision", ModelSettings(), dead_images_unreachable, name=name,
                           recent=RecentChecks(ttl_s=0))
        self.stage = Stage(spec, self.store, batches or self.batches, self.publisher, self.settings)

    def rounds(self, count: int = 1) -> None:
        for _ in range(count):
            asyncio.run(step(self.stage, watching=True))

    def housekeep(self) -> None:
        asyncio.run(housekeep(self.stage))

    def orphan(self, shard_id: str, lot_ids: list[str]) -> str:
        """A batch of job-1 holding these lots that no shard row knows (its id): the reconciler's."""
        path = Path(self.settings.work_dir) / f"{shard_id}.jsonl"
        path.write_bytes(b"".join(orjson.dumps({"custom_id": i, "body": {}}) + b"\n" for i in lot_ids))
        file_id = asyncio.run(self.batches.upload_batch_file(path))
        metadata = batch_metadata("vision", "job-1", shard_id, 1)
        return str(asyncio.run(self.batches.create_batch(file_id, metadata))["id"])

    def of(self, kind: type[Event]) -> list[Any]:
        return [event for event in self.publisher.events if isinstance(event, kind)]

    def completed(self) -> list[str]:
        return sorted(event.lot_id for event in self.of(VisionCompleted))

    def failed(self) -> dict[str, str]:
        return {event.lot_id: event.reason for event in self.of(LotFailed)}

    def submitted(self) -> list[VisionBatchSubmitted]:
        return self.of(VisionBatchSubmitted)


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[World]:
    settings = StageSettings(window_s=0.0, max_attempts=2, work_dir=str(tmp_path))
    built = World(FakeStore(), FakeBatches(), FakePublisher(), settings, None)  # type: ignore[arg-type]
    built.restart()
    # On /metrics as while its loop runs, read again at every scrape (`run_stage_loop`).
    metrics.FIGURES.watch("vision", built.store.figures, built.store.lots_waiting, fresh_s=0,
                          paused_here=lambda: key_refused(built.stage))
    yield built
    metrics.FIGURES.forget("vision")
