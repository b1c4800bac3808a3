"""The result-store's threads each publish through a producer of their own."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from lotlens_result_store import __main__ as result_store
from lotlens_result_store.sweeps import Swept


def test_the_swap_watch_and_the_consumer_never_share_a_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    # `EventProducer` is one thread's: a flush that fails in one thread discards what another
    # queued, and that thread's own flush then reports nothing lost (its JobCompleted marked
    # announced, never sent).
    producers: list[object] = []
    used: dict[str, Any] = {}

    def producer(*_: Any) -> object:
        producers.append(object())
        return producers[-1]

    class Thread:
        def __init__(self, *, target: Any, name: str, daemon: bool, args: tuple[Any, ...]) -> None:
            used[name] = args[1]

        def start(self) -> None:
            pass

    def consume(_settings: Any, _topics: Any, _spec: Any, producer: object, _stop: Any) -> None:
        used["consumer"] = producer

    monkeypatch.setenv("LOTLENS_CLIENTS", '{"client-a": "a-key-of-thirty-two-characters-or-more"}')
    monkeypatch.setattr(result_store, "EventProducer", producer)
    engine = type("Engine", (), {"dispose": lambda self: None})()
    monkeypatch.setattr(result_store, "make_engine", lambda *_: engine)
    monkeypatch.setattr(result_store, "serve_operations", lambda *_: None)
    monkeypatch.setattr(result_store, "stop_on_signals", threading.Event)
    monkeypatch.setattr(result_store, "sweep", lambda *_: Swept(tables=1, announced=0))
    monkeypatch.setattr(result_store.threading, "Thread", Thread)
    monkeypatch.setattr(result_store, "run_consumer", consume)
    result_store.main()
    assert set(used) == {"swap-watch", "consumer"}
    assert used["swap-watch"] is not used["consumer"]
