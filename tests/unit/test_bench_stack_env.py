"""The bench's stack calls the stand-in it starts, whatever model the developer's shell names."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import StackEnv
from tests.unit.stack_support import stack_module


@pytest.mark.parametrize("given", [{"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
                                   {"OPENAI_API_KEY": "sk-the-developers-own"}])
def test_the_bench_stack_starts_and_calls_its_own_stand_in(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, given: dict[str, str]) -> None:
    # With OPENAI_BASE_URL (or a key) exported, `make up`'s rules sent the bench's load to that
    # server (or to OpenAI, billed), and the stand-in the bench reads its figures from never started.
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    env = StackEnv()
    bench_stack = {**env.isolation("postgresql://u@127.0.0.1:1/db", "bench-x"), **env.overrides()}
    for name, value in bench_stack.items():
        monkeypatch.setenv(name, value)
    stack = stack_module(monkeypatch, tmp_path)
    assert stack._calls_standin()
    assert "openai-standin" in [process.name for process in stack._plan()]
