"""Log lines as a process writes them: JSON on every line, librdkafka's included."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.servers import free_port

pytestmark = pytest.mark.integration

# A producer pointed at a port nobody listens on: librdkafka logs its connection failures.
SCRIPT = """
import logging
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.logs import log_context, setup_logging
from lotlens_common.settings import KafkaSettings
setup_logging("INFO")
producer = EventProducer(KafkaSettings(bootstrap_servers="127.0.0.1:{port}"), "log-test")
with log_context(job_id="job-42"):
    logging.getLogger("lotlens.test").info("about the job")
    logging.getLogger("httpx2").info("HTTP Request: GET https://api.openai.com/v1/batches 200")
producer.publish_raw("lotlens.logs", None, b"x", [])
try:
    producer.flush(3)
except PublishError as exc:
    logging.getLogger("lotlens.test").warning("no broker: %s", exc)
"""


def test_every_line_is_json_librdkafka_included_with_the_job_context() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(port=free_port())], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    lines = done.stderr.splitlines()
    entries = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    loggers = {entry["logger"] for entry in entries}
    assert "librdkafka" in loggers, lines
    about = [entry for entry in entries if entry["msg"] == "about the job"]
    assert about and about[0]["job_id"] == "job-42"
    assert "httpx2" not in loggers, "third-party request logs are WARNING and up only"
    assert all("job_id" not in entry for entry in entries if entry["logger"] == "librdkafka")
