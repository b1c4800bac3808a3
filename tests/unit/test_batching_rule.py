"""The batching rule decides when a job's waiting lots become an OpenAI batch."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from lotlens_common.images import ImageCheck
from lotlens_common.model.settings import ModelSettings
from lotlens_common.stage.adapters.jsonl import JsonlWriter
from lotlens_common.stage.config import StageSettings
from lotlens_common.stage.core.limits import MAX_REQUESTS_PER_BATCH
from lotlens_common.stage.core.rule import Flush, WaitingJob, plan_flushes
from lotlens_common.stage.submit import PREPARE_CHUNK
from lotlens_common.stage.work import LotWork, VisionWork
from lotlens_vision_batcher.vision_stage import VisionStage

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def job(job_id: str, waiting: int, arrived: int, expected: int, age_s: float = 0.0,
        tokens: int = 1000, client: str = "c1") -> WaitingJob:
    return WaitingJob(job_id, client, waiting, arrived, expected, NOW - timedelta(seconds=age_s), tokens)


def test_a_job_whose_lots_have_all_arrived_is_flushed_at_once() -> None:
    assert plan_flushes([job("a", 3, 3, 3)], NOW, 30, 50_000, 0, 0) == [Flush("a", 3)]


def test_a_job_still_receiving_lots_waits_for_the_window() -> None:
    assert plan_flushes([job("a", 10, 10, 100, age_s=5)], NOW, 30, 50_000, 0, 0) == []


def test_a_partial_job_is_flushed_when_the_window_has_passed() -> None:
    assert plan_flushes([job("a", 10, 10, 100, age_s=31)], NOW, 30, 50_000, 0, 0) == [Flush("a", 10)]


def test_a_full_batch_is_sent_without_waiting_and_never_exceeds_the_request_limit() -> None:
    assert plan_flushes([job("a", 120_000, 120_000, 200_000)], NOW, 30, 50_000, 0, 0) == [
        Flush("a", 50_000)]


def test_oldest_jobs_go_first() -> None:
    plan = plan_flushes([job("new", 2, 2, 2, age_s=1), job("old", 2, 2, 2, age_s=9)], NOW, 30, 10, 0, 0)
    assert [flush.job_id for flush in plan] == ["old", "new"]


def test_lots_wait_when_the_enqueued_token_budget_is_full() -> None:
    assert plan_flushes([job("a", 5, 5, 5)], NOW, 30, 100, tokens_enqueued=10_000,
                        token_limit=10_000) == []


def test_a_batch_is_cut_to_what_the_token_budget_allows() -> None:
    plan = plan_flushes([job("a", 50, 50, 50, tokens=1000), job("b", 5, 5, 5, tokens=1000)],
                        NOW, 30, 100, tokens_enqueued=0, token_limit=20_000)
    assert plan == [Flush("a", 20)]


# --- the whole path of a big job: rule, preparation chunk by chunk, JSONL file ---

async def all_reachable(urls: Sequence[str]) -> ImageCheck:
    return ImageCheck(valid=tuple(urls), unreachable=())


def big_job(lots: int) -> list[LotWork[VisionWork]]:
    return [LotWork("big", f"lot-{i}", "c1", lots, 1, VisionWork(
        additional_info=f"Lot {i}: Camry 2.4, front collision, airbags deployed",
        image_urls=tuple(f"https://img.test/big/{i}-{k}.jpg" for k in range(5)),
        languages=("en", "de", "fr"))) for i in range(lots)]


async def send_all(lots: list[LotWork[VisionWork]], byte_limit: int, folder: Path) -> list[Path]:
    """Flush a job until no lot waits, as the stage does; the JSONL file of each batch."""
    vision = VisionStage("vision", ModelSettings(), all_reachable)
    files: list[Path] = []
    waiting = lots
    while waiting:
        [flush] = plan_flushes([job("big", len(waiting), len(lots), len(lots))], NOW, 30,
                               MAX_REQUESTS_PER_BATCH, 0, 0)
        shard, waiting = waiting[:flush.lots], waiting[flush.lots:]
        writer = JsonlWriter(folder / f"batch-{len(files)}.jsonl", byte_limit)
        for start in range(0, len(shard), PREPARE_CHUNK):
            writer.write((await vision.prepare(shard[start:start + PREPARE_CHUNK])).requests)
        files.append(writer.close())
        # Lots past the byte limit go back to the front of the queue, for the next batch.
        overflow = set(writer.overflow)
        waiting = [lot for lot in shard if lot.lot_id in overflow] + waiting
    return files


def lines_of(path: Path) -> list[str]:
    with path.open("rb") as lines:
        return [json.loads(line)["custom_id"] for line in lines]


def test_a_50001_lot_job_goes_out_as_50000_requests_then_1_written_in_bounded_memory(
        tmp_path: Path) -> None:
    lots = big_job(50_001)
    tracemalloc.start()
    try:
        files = asyncio.run(send_all(lots, StageSettings().max_batch_bytes, tmp_path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [len(lines_of(path)) for path in files] == [50_000, 1]
    assert files[0].stat().st_size > 50 * 2**20  # a file far bigger than the memory it took
    assert peak < 16 * 2**20


def test_a_batch_that_would_cross_the_byte_limit_is_cut_and_the_rest_goes_in_the_next(
        tmp_path: Path) -> None:
    lots = big_job(5_000)
    files = asyncio.run(send_all(lots, 2 * 2**20, tmp_path))
    assert len(files) > 3
    assert all(path.stat().st_size <= 2 * 2**20 for path in files)
    assert [lot_id for path in files for lot_id in lines_of(path)] == [lot.lot_id for lot in lots]
