"""The longest step of an event loop, in its thread's CPU time (no tests here).

A request waits on the loop while a callback holds it. A probe request's wall-clock wait measures
that, and also the time the machine gave other processes and other threads of this one: on 2
loaded cores (`make test`) a probe waited half a second while the loop did nothing of note. The
CPU time the loop's own thread spends between two ticks of a sampler on the loop is the work that
held it there (waiting for the GIL or the CPU costs none); the machine's load makes it no longer.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

TICK_S = 0.001


class LoopSteps:
    """A sampler run on the watched loop: the most CPU its thread spent between two of its ticks."""

    def __init__(self) -> None:
        self.longest_s = 0.0
        self.started = threading.Event()
        self.stopped = False  # set by the watching thread, read on the loop's

    async def sample(self) -> None:
        """Tick until stopped, keeping the longest gap between ticks in this thread's CPU time."""
        last = time.thread_time()
        self.started.set()
        while not self.stopped:
            await asyncio.sleep(TICK_S)
            now = time.thread_time()
            self.longest_s = max(self.longest_s, now - last)
            last = now


@contextmanager
def loop_steps_watched(loop: asyncio.AbstractEventLoop) -> Iterator[LoopSteps]:
    """Watch `loop` (running in another thread) from the moment this enters until it leaves.

    The garbage collector waits meanwhile: a full collection, in a pytest worker that has run many
    tests, runs in whichever thread set it off (the loop's too) and is no part of what is watched."""
    steps = LoopSteps()
    collecting = gc.isenabled()
    gc.disable()
    sampling = asyncio.run_coroutine_threadsafe(steps.sample(), loop)
    try:
        assert steps.started.wait(30), "the loop did not start the sampler"
        yield steps
    finally:
        steps.stopped = True
        sampling.result(timeout=30)
        if collecting:
            gc.enable()
