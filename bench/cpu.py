"""CPU-seconds each part of the stack uses over a window, read from /proc.

On this 2-core machine every second of a 50,000-lot job keeps both cores busy, so its wall time
is the stack's CPU divided by two, and the wall time of one run differs from the next by up to
10%. The CPU-seconds of a job are steadier, and they say where the time goes: the pipeline rows
give both, next to the CPU its floor used.

A process's figure includes the children it reaped (`cutime`, `cstime`): a PostgreSQL backend
that exits within the window is counted in the postmaster's figure, so nothing is lost.

PostgreSQL's figure is also split by whom its backends served: each service names its connections
(`application_name` `lotlens-<service>`, `make_engine`), and `pg_stat_activity` maps a backend's
pid to that name. pg_stat_statements could not say it: with both cores busy a statement's time is
mostly waiting for a core or a lock.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.config import SERVICES
from lotlens_common.db import APPLICATION_NAME_PREFIX

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
STANDIN = "openai-standin"
# Part name -> what its processes' command line contains (the first match wins): the stack's
# services (`python -m lotlens_<name>`), then the broker, the database and the bench itself.
PARTS = (
    *((name, "lotlens_" + name.replace("-", "_")) for name in SERVICES),
    ("kafka", "kafka.Kafka"),
    ("postgres", "postgres"),
    ("bench", "-m bench"),
)
# What LotLens itself runs: the stand-in and the bench are not counted in the stack's total.
STACK = tuple(part for part, _ in PARTS if part not in (STANDIN, "bench"))
# What a floor's run uses: the bench's own bare clients, the broker and the database.
FLOOR = ("bench", "kafka", "postgres")

Snapshot = dict[int, tuple[str, float]]
# PostgreSQL's processes not serving a named LotLens connection: its own (postmaster with the
# backends it reaped, checkpointer, WAL writer, autovacuum) and the bench's.
POSTGRES_FOR = "postgres for "
POSTGRES_OTHER = POSTGRES_FOR + "the rest"


def part_of(command_line: str) -> str | None:
    """The part a process belongs to, by its command line (None: not one we count)."""
    return next((part for part, marker in PARTS if marker in command_line), None)


def process_cpu_s(pid: int | str) -> float:
    """CPU-seconds a process and its waited-for children have used (OSError once it has exited)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime: fields 14-17 of stat, 11-14 after the command name.
    return sum(int(value) for value in fields[11:15]) / TICKS_PER_S


def _process(pid: str) -> tuple[str, float] | None:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        used_s = process_cpu_s(pid)
    except OSError:  # it exited between the listing and the read
        return None
    part = part_of(command)
    return None if part is None else (part, used_s)


def snapshot() -> Snapshot:
    """pid -> (part, CPU-seconds so far) for every process of a part."""
    found: Snapshot = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit() and (process := _process(pid)) is not None:
            found[int(pid)] = process
    return found


def used(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """part -> CPU-seconds between the snapshots. A process started since counts whole; one that
    exited since counts in its parent's reaped figure (or not at all, if nobody reaped it)."""
    totals: dict[str, float] = {}
    for snap, sign in ((after, 1.0), (before, -1.0)):
        for part, seconds in snap.values():
            totals[part] = totals.get(part, 0.0) + sign * seconds
    return {part: max(0.0, seconds) for part, seconds in sorted(totals.items())}


def stack_total(parts: Mapping[str, float]) -> float:
    """The CPU-seconds of LotLens's own processes, its broker and its database."""
    return sum(seconds for part, seconds in parts.items() if part in STACK)


def floor_total(parts: Mapping[str, float]) -> float:
    """The CPU-seconds of a floor's run: the bench's bare clients, the broker and the database."""
    return sum(seconds for part, seconds in parts.items() if part in FLOOR)


def backend_names(conn: Any) -> dict[int, str]:
    """Backend pid -> the LotLens service it serves, for every named session (a psycopg2 connection)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pid, application_name FROM pg_stat_activity WHERE application_name LIKE %s",
                    (APPLICATION_NAME_PREFIX + "%",))
        rows = cur.fetchall()
    conn.rollback()
    return {pid: name.removeprefix(APPLICATION_NAME_PREFIX) for pid, name in rows}


def postgres_by_service(before: Snapshot, after: Snapshot, names: Mapping[int, str]) -> dict[str, float]:
    """"postgres for <service>" -> PostgreSQL CPU-seconds between the snapshots spent on that service's
    sessions; the rest under `POSTGRES_OTHER`. Together they make the "postgres" part."""
    split: dict[str, float] = {}
    for pid, (part, seconds) in after.items():
        if part != "postgres":
            continue
        key = POSTGRES_FOR + names[pid] if pid in names else POSTGRES_OTHER
        start = before[pid][1] if pid in before else 0.0
        split[key] = split.get(key, 0.0) + seconds - start
    split[POSTGRES_OTHER] = split.get(POSTGRES_OTHER, 0.0) - sum(
        seconds for pid, (part, seconds) in before.items() if part == "postgres" and pid not in after)
    return {key: max(0.0, seconds) for key, seconds in sorted(split.items())}
