"""The relay's stop: one last publishing of what is left, never past the stop's deadline."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from sqlalchemy import Engine, event, func, select

from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings, ServiceSettings
from lotlens_common.tables import outbox
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.outbox import Outbox
from lotlens_gateway.relay import Relay, RelaySettings
from tests.integration.test_gateway_outbox import _jobs_events

pytestmark = pytest.mark.integration

DEAD_KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:9")


def started_idle(relay: Relay, engine: Engine) -> None:
    """Start the relay and return once its first round has read the outbox: it idles after it
    (a 600 s sweep), so rows appended now without announcing them wait for the stop."""
    read = threading.Event()

    def note(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "FROM outbox" in statement and "published_at IS NULL" in statement and "ORDER BY" in statement:
            read.set()

    event.listen(engine, "after_cursor_execute", note)
    try:
        relay.start()
        assert read.wait(30), "the relay's first round never read the outbox"
    finally:
        event.remove(engine, "after_cursor_execute", note)


def unpublished(engine: Engine, job_id: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(
            outbox.c.job_id == job_id, outbox.c.published_at.is_(None))).scalar_one())


def test_with_kafka_unreachable_the_last_round_ends_at_the_stops_deadline(
        settings: ServiceSettings, engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    topic = settings.topics.submissions
    metrics = GatewayMetrics()
    # A round waits up to 30 s for Kafka; the stop allows 5 s.
    relay = Relay(engine, EventProducer(DEAD_KAFKA, "relay-stop-dead"), [topic],
                  RelaySettings(publish_timeout_s=30.0, sweep_s=600.0), metrics)
    started_idle(relay, engine)
    [job] = _jobs_events("relay-stop-dead", 1, 2)
    Outbox(engine, metrics, 1_000_000).append(topic, job)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="lotlens_gateway.relay"):
        relay.stop(5.0)
    stopped_in = time.monotonic() - started
    # Tried (the last round), and gave up at the deadline, far from the round's 30 s: the rows
    # wait in the outbox for any gateway's next round.
    assert [r.getMessage() for r in caplog.records if "stopped with rows unpublished" in r.getMessage()]
    assert stopped_in < 15, f"the stop took {stopped_in:.1f} s"
    assert unpublished(engine, job[0].job_id) == len(job)


def test_the_last_round_publishes_rows_no_append_announced(settings: ServiceSettings, engine: Engine) -> None:
    # Rows committed while the relay idles (another replica's, or announced as the stop began).
    topic = settings.topics.submissions
    metrics = GatewayMetrics()
    relay = Relay(engine, EventProducer(settings.kafka, "relay-stop"), [topic], RelaySettings(sweep_s=600.0),
                  metrics)
    started_idle(relay, engine)
    [job] = _jobs_events("relay-stop", 1, 2)
    Outbox(engine, metrics, 1_000_000).append(topic, job)
    relay.stop(10.0)
    assert unpublished(engine, job[0].job_id) == 0
