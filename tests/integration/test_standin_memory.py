"""A finished batch leaves the stand-in holding its record and counts, not a record per line: the
answers the chaos run reads back stay on disk, so a stand-in that runs for days (make up, bench,
chaos) does not grow with every batch it ever ran."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2

from tests.standin import completed_vision_batch, serve_standin

LINES = 4_000
# A line's answer held in memory took about 440 bytes (22 MB a 50,000-line batch): 1.7 MB here.
# What a finished batch may keep is its record, its files' records and their ids, a few kB.
HELD_LIMIT = 100_000
STANDIN_CODE = [tracemalloc.Filter(True, "*lotlens_openai_standin*")]


@contextmanager
def _tracing() -> Iterator[Callable[[], int]]:
    """A measure of the bytes the stand-in's own code allocated since the block began and still holds."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot().filter_traces(STANDIN_CODE)

    def held() -> int:
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(STANDIN_CODE)
        return sum(stat.size_diff for stat in after.compare_to(before, "filename"))

    try:
        yield held
    finally:
        tracemalloc.stop()


def test_a_finished_batch_leaves_no_record_per_line_in_memory(tmp_path: Path) -> None:
    with serve_standin(tmp_path, in_progress_seconds=0.3) as standin, \
            httpx2.Client(base_url=standin.base_url, timeout=30) as api:
        with _tracing() as held:
            batch_id = completed_vision_batch(api, LINES)
            held_bytes = held()
        kept = standin.control.get(f"/_standin/batches/{batch_id}/requests").json()
    assert held_bytes < HELD_LIMIT, f"the stand-in holds {held_bytes:,} bytes after a {LINES:,}-line batch"
    # What it no longer holds is still served, from disk.
    assert len(kept["custom_ids"]) == LINES and len(kept["answers"]) == LINES


def test_a_restarted_stand_in_does_not_load_its_finished_batches_lines(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with serve_standin(tmp_path, state_dir=state, in_progress_seconds=0.3) as standin, \
            httpx2.Client(base_url=standin.base_url, timeout=30) as api:
        batch_id = completed_vision_batch(api, LINES)
    with _tracing() as held, serve_standin(tmp_path, state_dir=state) as standin:
        assert standin.control.get(f"/v1/batches/{batch_id}").json()["status"] == "completed"
        held_bytes = held()
        kept = standin.control.get(f"/_standin/batches/{batch_id}/requests").json()
    assert held_bytes < HELD_LIMIT, f"restarted, it holds {held_bytes:,} bytes of a {LINES:,}-line batch"
    assert len(kept["custom_ids"]) == LINES and len(kept["answers"]) == LINES
