"""The result-store's threads each publish through a producer of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Run in an interpreter of its own: importing a service's `__main__` takes over SIGTERM and SIGINT.
_WIRING = """
import json, threading
from lotlens_result_store import __main__ as result_store
from lotlens_result_store.sweeps import Swept

used = {}

class Thread:
    def __init__(self, *, target, name, daemon, args):
        used[name] = id(args[1])

    def start(self):  # not run: only the producer it was given is looked at
        return None

def consume(_settings, _topics, _spec, producer, _stop):
    used["consumer"] = id(producer)

engine = type("Engine", (), {"dispose": lambda self: None})()
result_store.EventProducer = lambda *_: object()
result_store.make_engine = lambda *_, **__: engine
result_store.serve_operations = lambda *_: None
result_store.stop_on_signals = threading.Event
result_store.sweep = lambda *_: Swept(tables=1, announced=0)
result_store.threading.Thread = Thread
result_store.run_consumer = consume
result_store.main()
print(json.dumps(used))
"""


def test_the_swap_watch_and_the_consumer_never_share_a_producer() -> None:
    # `EventProducer` is one thread's: a flush that fails in one thread discards what another
    # queued, and that thread's own flush then reports nothing lost (its JobCompleted marked
    # announced, never sent).
    env = {**os.environ, "LOTLENS_CLIENTS": '{"client-a": "a-key-of-thirty-two-characters-or-more"}'}
    done = subprocess.run([sys.executable, "-c", _WIRING], capture_output=True, text=True, timeout=60,
                          check=True, env=env)
    used = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(used) == {"swap-watch", "consumer"}
    assert used["swap-watch"] != used["consumer"]
