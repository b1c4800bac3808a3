"""Scenario 6, memory: peak RSS (VmHWM) of each service over scenarios 1 and 2.

The peak is reset (`/proc/<pid>/clear_refs` <- 5) right before the first intake run, so VmHWM is the
peak of the scenarios, not of start-up. Floor: the process's own RSS at that moment (idle, warmed up).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench import stackctl
from bench.stats import Row


@dataclass
class MemoryWatch:
    """Idle RSS per service at `start`, peak RSS per service at `stop`."""

    idle_kb: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    reset_ok: bool = True

    def start(self) -> None:
        """Record idle RSS and reset the peaks."""
        self.pids = stackctl.pids()
        for name, pid in self.pids.items():
            self.reset_ok &= stackctl.reset_peak(pid)
            self.idle_kb[name] = stackctl.memory_kb(pid).get("VmRSS", 0)

    def rows(self, lots: int) -> list[Row]:
        """One report row per service: peak MB vs idle MB."""
        rows: list[Row] = []
        for name, pid in self.pids.items():
            peak = stackctl.memory_kb(pid).get("VmHWM", 0)
            note = "" if self.reset_ok else "peak NOT reset (clear_refs refused): includes start-up"
            rows.append(
                Row(
                    "6 memory",
                    f"{name} peak RSS ({lots} lots)",
                    "MB",
                    [peak / 1024],
                    [self.idle_kb.get(name, 0) / 1024],
                    notes=note or "floor = idle RSS before run 1",
                )
            )
        return rows
