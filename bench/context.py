"""What every scenario needs: settings, the client key, helper servers, a database connection."""

from __future__ import annotations

import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import httpx2

from bench import floor, kafkautil
from bench.config import Settings


@dataclass
class Context:
    """Shared by the scenarios of one bench run."""

    settings: Settings
    key: str
    images: str  # base URL of the bench's image server
    receiver: str  # base URL of the bench's webhook receiver (the same server)
    http: httpx2.Client = field(default_factory=lambda: httpx2.Client(timeout=600))
    conn: Any = field(default_factory=floor.connect)
    log_started: float = field(default_factory=time.monotonic)

    def log(self, message: str) -> None:
        """Progress on stderr, with the time since the bench started."""
        # The wall clock too: to match a line with the services' and PostgreSQL's logs.
        print(f"[bench {time.monotonic() - self.log_started:6.1f}s {time.strftime('%H:%M:%S')}] {message}",
              file=sys.stderr, flush=True)

    def wait_idle(self, timeout_s: float = 120.0) -> None:
        """Wait until the stack's consumers have no lag (earlier work must not overlap a run)."""
        deadline = time.monotonic() + timeout_s
        while (behind := kafkautil.lag()) and time.monotonic() < deadline:
            time.sleep(0.5)
        if behind:
            self.log(f"warning: consumers still {behind} messages behind; measuring anyway")
        self.wait_quiet()

    def wait_quiet(self, busy_below: float = 0.25, timeout_s: float = 60.0) -> None:
        """Vacuum and checkpoint what earlier runs wrote, then wait until less than `busy_below`
        of the machine's CPU time was busy over a second.

        No lag is not enough: after a 50,000-lot job, PostgreSQL vacuums and checkpoints what the
        job wrote, and a floor measured at once took three times as long (its COPY 0.76 -> 2.19 s).
        Nor is a quiet second: autovacuum wakes once a minute and, held back by its cost delay,
        stays under the threshold while it works through a job's rows for about 30 s; the floors
        and jobs measured meanwhile took longer (floors 2.40 and 2.87 s against 1.94 s in one run).
        """
        started = time.monotonic()
        checkpointed = _settle_database()
        self.log(f"database vacuumed{' and checkpointed' if checkpointed else ''} in "
                 f"{time.monotonic() - started:.1f}s")
        deadline = time.monotonic() + timeout_s
        busy = _busy_share(1.0)
        while busy >= busy_below:
            if time.monotonic() >= deadline:
                self.log(f"warning: the machine is still {busy:.0%} busy; measuring anyway")
                return
            busy = _busy_share(1.0)


def _settle_database() -> bool:
    """Vacuum the bench database's tables and write out every dirty page, now.

    A manual VACUUM runs without autovacuum's cost delay, and takes over a table autovacuum is
    working on (autovacuum gives way to a conflicting lock). The checkpoint matters as much: a
    job leaves shared_buffers full of dirty pages, and the next floor's COPY wrote them out
    itself to find room (its COPY 0.45 -> 0.99 s, the floor 1.66 -> 2.27 s, in one run). It
    needs `pg_checkpoint` (granted by `scripts/infra.sh`); without it, the vacuum alone is done.
    Whether it checkpointed.
    """
    with closing(floor.connect()) as conn:
        conn.autocommit = True  # neither VACUUM nor CHECKPOINT runs in a transaction
        with conn.cursor() as cur:
            cur.execute("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                        "WHERE tableowner = current_user AND schemaname NOT LIKE 'pg\\_%'")
            tables = [name for (name,) in cur.fetchall()]
            if tables:
                cur.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")
            cur.execute("SELECT pg_has_role('pg_checkpoint', 'MEMBER')")
            allowed = bool(cur.fetchone()[0])
            if allowed:
                cur.execute("CHECKPOINT")
            return allowed


def _busy_share(seconds: float) -> float:
    """The share of all CPUs' time spent on anything but idling, over `seconds` (/proc/stat)."""
    def idle_total() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
        return fields[3], sum(fields)
    idle_before, total_before = idle_total()
    time.sleep(seconds)
    idle_after, total_after = idle_total()
    return 1.0 - (idle_after - idle_before) / max(1, total_after - total_before)
