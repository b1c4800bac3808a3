"""The answers a batch's lines got (for the chaos run's spend checks) are kept on disk at the cost of
writing each answer once, however many slices the batch runs in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest

from lotlens_openai_standin.durable import StateStore
from tests.standin import completed_vision_batch, serve_standin

LOTS = 400


def _counting(written: list[int], method: Callable[..., None]) -> Callable[..., None]:
    def counted(store: StateStore, kind: str, key: str, document: Any) -> None:
        if kind == "batch_answers":
            written.append(len(orjson.dumps(document)))
        method(store, kind, key, document)
    return counted


def test_a_batch_run_in_many_slices_writes_each_answer_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each slice rewrote the batch's whole answers so far: ten slices of 50,000 lines wrote ~5.5
    # times their size (about 10 rewrites of up to 6 MB), which the bench saw as CPU.
    written: list[int] = []
    for name in ("save", "append"):
        if hasattr(StateStore, name):
            monkeypatch.setattr(StateStore, name, _counting(written, getattr(StateStore, name)))
    with serve_standin(tmp_path, state_dir=tmp_path / "state", in_progress_seconds=1.0) as standin, \
            httpx2.Client(base_url=standin.base_url, timeout=10) as api:
        batch_id = completed_vision_batch(api, LOTS)
        answers = standin.control.get(f"/_standin/batches/{batch_id}/requests").json()["answers"]
    assert len(answers) == LOTS and len(written) >= 5, written  # the run took several slices
    assert sum(written) < 1.1 * len(orjson.dumps(answers)), written


def test_the_answers_are_the_same_after_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with serve_standin(tmp_path, state_dir=state, in_progress_seconds=0.3) as standin, \
            httpx2.Client(base_url=standin.base_url, timeout=10) as api:
        batch_id = completed_vision_batch(api, 50)
        before = standin.control.get(f"/_standin/batches/{batch_id}/requests").json()
    with serve_standin(tmp_path, state_dir=state) as standin:
        after = standin.control.get(f"/_standin/batches/{batch_id}/requests").json()
    assert after == before and len(after["answers"]) == 50
    assert {answer["status"] for answer in after["answers"].values()} == {200}
