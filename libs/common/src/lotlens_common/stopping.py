"""SIGTERM and SIGINT caught from a service's first moments: every `__main__` calls
`catch_stop_signals` on import, before its other imports (standard library only here), ahead of
the seconds of imports and connections of a start-up. On import, not under `if __name__ ==
"__main__"`: the images run the console script (`lotlens-<service>`), which imports the module
and calls `main`, so such a guard never ran there. Importing a `__main__` is starting the service.

Until a service installed its handlers, Python's default SIGTERM killed it (exit -15): a pod
stopped while it started (a rolling restart replacing it at once, a scale-in) exited non-zero.
Worse as a container's PID 1, where the kernel drops a signal the process has no handler for: the
SIGTERM was lost and the pod waited out its grace period until the kubelet's SIGKILL.
A stop asked for during start-up is kept in `STOP`, and the service ends as soon as its start-up
is done, cleanly. (The interpreter's own first milliseconds, before that call, remain uncovered.)
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP = threading.Event()


def _asked_to_stop(_signum: int, _frame: FrameType | None) -> None:
    STOP.set()


def catch_stop_signals() -> threading.Event:
    """Make SIGTERM and SIGINT set `STOP` (from now on, and what was asked before stays asked)."""
    signal.signal(signal.SIGTERM, _asked_to_stop)
    signal.signal(signal.SIGINT, _asked_to_stop)
    return STOP

