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


# A consumer group's loop, as every consuming service runs it, with its broker refusing connections.
CONSUMER_SCRIPT = """
import threading
from lotlens_common.kafka import ConsumerSpec, run_consumer
from lotlens_common.logs import setup_logging
from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings, TopicSettings
setup_logging("INFO")
kafka = KafkaSettings(bootstrap_servers="127.0.0.1:{port}")
stop = threading.Event()
threading.Timer({seconds}, stop.set).start()
run_consumer(kafka, TopicSettings(), ConsumerSpec("log-test", ["lotlens.logs"], lambda _envelopes: None),
             EventProducer(kafka, "log-test"), stop)
"""


def test_a_broker_refusing_connections_is_logged_once_a_minute_not_twenty_times_a_second() -> None:
    """Each consuming service logged about 20 librdkafka lines a second for as long as Kafka refused
    connections (740 in 37 s for the result-store): an outage buried every other line and filled
    the log store. The same failure is now logged when it starts, then once a minute with a count."""
    seconds = 8
    done = subprocess.run([sys.executable, "-c", CONSUMER_SCRIPT.format(port=free_port(), seconds=seconds)],
                          cwd=ROOT, capture_output=True, text=True, timeout=90, check=True)
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    refused = [entry["msg"] for entry in entries
               if entry["logger"] == "librdkafka" and "Connection refused" in entry["msg"]]
    assert refused, "the refused connection is still logged"
    assert len(refused) <= 4, f"{len(refused)} lines in {seconds} s: {refused[:3]}"
