"""A stage holds a whole shard of claimed lots without the collector walking them."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lotlens_common.gc_tuning import GC_THRESHOLDS, STAGE_GC_THRESHOLDS
from lotlens_common.stage.work import LotWork, VisionWork, arriving_vision_work, read_work

SHARD = 50_000  # the most requests a batch holds (`max_requests_per_batch`)


def _claimed_rows() -> list[str]:
    """A full shard's work rows as `stage_lots.work` holds them, five images a lot."""
    return [arriving_vision_work(f"2019 Toyota Camry, lot {i}",
                                 tuple(f"https://images.example/{i}/{k}.jpg" for k in range(5)),
                                 ("en", "de", "fr"), {}).decode() for i in range(SHARD)]


@contextmanager
def _young_collections(thresholds: tuple[int, int, int]) -> Iterator[list[int]]:
    """The collections that start meanwhile, by generation, under `thresholds`."""
    started: list[int] = []

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(info["generation"])

    before = gc.get_threshold()
    gc.collect()  # the young generation's count starts from nothing
    gc.set_threshold(*thresholds)
    gc.callbacks.append(watch)
    try:
        yield started
    finally:
        gc.callbacks.remove(watch)
        gc.set_threshold(*before)


def _claim(rows: list[str]) -> list[LotWork[VisionWork]]:
    return [LotWork("job", f"lot-{i}", "client", SHARD, 0, read_work(VisionWork, row, None))
            for i, row in enumerate(rows)]


def test_a_stage_claims_a_full_shard_without_a_collection() -> None:
    rows = _claimed_rows()
    with _young_collections(STAGE_GC_THRESHOLDS) as started:
        lots = _claim(rows)
    assert len(lots) == SHARD
    assert started == []


def test_the_other_services_threshold_would_walk_the_shard_again_and_again() -> None:
    # What the stages ran with before: each collection walked every lot claimed so far (0.8-1.2
    # CPU-s of each stage's 50,000-lot job). The test above fails with it.
    rows = _claimed_rows()
    with _young_collections(GC_THRESHOLDS) as started:
        _claim(rows)
    assert len(started) >= 3, started
