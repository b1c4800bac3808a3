"""Fault injection for crash tests: `LOTLENS_FAULT_AT=<point>` kills the process at that point.

The points sit exactly where a crash is most dangerous (e.g. a batch created but not recorded);
tests set the variable, let the process die with SIGKILL, restart it and check nothing was lost.
"""

from __future__ import annotations

import os
import signal


def fault_point(name: str) -> None:
    """Die here, as abruptly as a power cut, when the environment asks for it."""
    if os.environ.get("LOTLENS_FAULT_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
