"""`python -m bench.sampler OUT MODULE`: run `python -m MODULE`, sampling every thread's Python stack.

A stand-in for py-spy (not installed): a daemon thread looks at `sys._current_frames()` every few
ms and counts a sample only for threads the kernel shows running (`R` in /proc/self/task/<tid>/stat),
so threads blocked in I/O, sleeps or waiting for the GIL do not count. At exit (the services stop
gracefully on SIGTERM) it writes the top functions by own ("self") and inclusive samples to OUT.
"""

from __future__ import annotations

import atexit
import runpy
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType

INTERVAL_S = 0.004
# Start-up (imports, connections) is not what the bench looks at: samples start after this.
WARMUP_S = 8.0
_stop = threading.Event()
_self: Counter[str] = Counter()
_inclusive: Counter[str] = Counter()
_threads: Counter[str] = Counter()
_samples = [0]


def _where(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    short = path.split("site-packages/")[-1].split("/src/")[-1]
    return f"{code.co_name} ({short}:{code.co_firstlineno})"


def _running(native_id: int | None) -> bool:
    try:
        stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "R"


def _sample(me: int) -> None:
    _stop.wait(WARMUP_S)
    while not _stop.is_set():
        time.sleep(INTERVAL_S)
        frames = sys._current_frames()
        _samples[0] += 1
        for thread in threading.enumerate():
            frame = frames.get(thread.ident or -1)
            if thread.ident == me or frame is None or not _running(thread.native_id):
                continue
            _threads[thread.name] += 1
            _self[_where(frame)] += 1
            seen: set[str] = set()
            while frame is not None:
                name = _where(frame)
                if name not in seen:
                    _inclusive[name] += 1
                    seen.add(name)
                frame = frame.f_back


def _dump(out: Path, sampler: threading.Thread) -> None:
    _stop.set()
    sampler.join(1.0)
    running = sum(_threads.values()) or 1
    lines = [
        f"{_samples[0]} sampling rounds every {INTERVAL_S * 1000:.0f} ms; {running} on-CPU thread samples",
        "",
        "on-CPU samples by thread:",
    ]
    lines += [f"  {n:7d} {100 * n / running:5.1f}%  {name}" for name, n in _threads.most_common()]
    lines += ["", "top functions, self (leaf frame):"]
    lines += [f"  {n:7d} {100 * n / running:5.1f}%  {name}" for name, n in _self.most_common(40)]
    lines += ["", "top functions, inclusive:"]
    lines += [f"  {n:7d} {100 * n / running:5.1f}%  {name}" for name, n in _inclusive.most_common(60)]
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    """Sample while running the module as __main__."""
    out, module = Path(sys.argv[1]), sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    sampler = threading.Thread(target=lambda: _sample(sampler.ident or 0), name="sampler", daemon=True)
    sampler.start()
    atexit.register(_dump, out, sampler)
    # uvicorn re-raises SIGTERM after its graceful shutdown with the previous handler in place:
    # make that handler an orderly exit so the atexit dump runs (the services install their own).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
