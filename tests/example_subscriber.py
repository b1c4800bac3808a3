"""The example subscriber (examples/subscriber) run as its own process, as a downstream team
runs it, and what it stored and logged."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT
from tests.polling import wait_for

SUBSCRIBER = ROOT / "examples" / "subscriber" / "subscriber.py"


class Subscriber:
    """The example as the downstream team would run it, one process at a time, on the given
    broker and comma-separated topics."""

    def __init__(self, bootstrap: str, topics: str, db: Path, log: Path) -> None:
        self.bootstrap, self.topics, self.db, self.log = bootstrap, topics, db, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, group: str, log: str) -> None:
        """Start in `group`, logging to `log`; returns once it has subscribed.

        Always as one instance (static membership, as the README advises): restarted after its
        SIGKILL without it, it waited 45 s for the killed member's session to expire."""
        self.log = self.log.with_name(log)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(SUBSCRIBER), "--bootstrap", self.bootstrap, "--group", group,
                 "--db", str(self.db), "--instance-id", "acme-subscriber-1", "--topics", self.topics],
                cwd=ROOT, stdout=out, stderr=out)

        def subscribed() -> bool:
            if "subscribed to" in self.log.read_text():
                return True
            assert self.running(), f"the subscriber exited: {self.log.read_text()}"
            return False

        wait_for(subscribed, lambda: f"the subscriber to subscribe: {self.log.read_text()}", every_s=0.1)

    def running(self) -> bool:
        """Whether its process is up."""
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        assert self.process.wait(30) in (0, -signal.SIGKILL), self.log.read_text()[-2000:]

    def rows(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        with sqlite3.connect(self.db) as conn:
            try:
                return conn.execute(query, args).fetchall()
            except sqlite3.OperationalError:  # the subscriber has not created its tables yet
                return []

    def wait_reported(self, job_id: str, seconds: float = 120) -> None:
        wait_for(lambda: self.rows("SELECT 1 FROM jobs WHERE job_id = ? AND reported = 1", job_id),
                 lambda: f"job {job_id} reported: {self.log.read_text()[-3000:]}", timeout_s=seconds,
                 every_s=0.3)

    def snapshot(self) -> list[list[tuple[Any, ...]]]:
        return [self.rows(f"SELECT * FROM {t} ORDER BY 1") for t in ("seen_events", "lot_results", "jobs")]

    def wait_logged(self, line: str, times: int = 1, seconds: float = 60) -> None:
        wait_for(lambda: self.log.read_text().count(line) >= times,
                 lambda: f"{line!r} {times}x: {self.log.read_text()[-3000:]}", timeout_s=seconds, every_s=0.3)
