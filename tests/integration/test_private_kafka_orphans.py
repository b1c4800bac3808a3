"""A test process that dies without its teardown (an abort inside librdkafka, a CI timeout's
kill -9) took none of its private brokers with it: six idle JVMs of about 265 MB each were found
running through later test runs and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.polling import wait_for
from tests.private_kafka import ROOT

pytestmark = pytest.mark.integration

_STARTS_AND_DIES = """
import os, signal, sys
from pathlib import Path
from tests.private_kafka import PrivateKafka
broker = PrivateKafka(Path(sys.argv[1]))
broker.start()
print(broker.process.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state  # a zombie has exited; only its parent's wait is left


def test_a_private_broker_dies_with_the_test_process_that_started_it(tmp_path: Path) -> None:
    dying = subprocess.Popen([sys.executable, "-c", _STARTS_AND_DIES, str(tmp_path / "kafka")], cwd=ROOT,
                             stdout=subprocess.PIPE)
    assert dying.stdout is not None
    broker: int | None = None
    try:
        broker = int(dying.stdout.readline() or 0) or None  # its pid, once it answers
        assert dying.wait(180) == -signal.SIGKILL and broker is not None
        pid = broker
        wait_for(lambda: not _running(pid), "the broker to end with the test process that started it",
                 timeout_s=10, every_s=0.1)
    finally:
        dying.kill()
        if broker is not None and _running(broker):
            os.kill(broker, signal.SIGKILL)
