"""The outbox backlog's age on /metrics (`lotlens_outbox_oldest_age_seconds`), the value
LotLensOutboxBacklog compares with 300 s: the oldest unpublished row's, as the relay reads it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from lotlens_common.envelope import Envelope
from lotlens_common.events import JobSubmitted
from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.outbox import Outbox
from lotlens_gateway.relay import Relay, RelaySettings
from tests.conftest import new_id
from tests.polling import wait_for
from tests.servers import free_port

pytestmark = pytest.mark.integration


def _job_submitted(client_id: str) -> Envelope:
    now = datetime.now(UTC)
    return Envelope(JobSubmitted(job_id=new_id("job-"), client_id=client_id, api_version="1.0.0",
                                 languages=("en",), total_lots=1, webhook_urls=(), created_at=now,
                                 estimated_completion=now), client_id=client_id)


def _sample(metrics: GatewayMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def test_the_oldest_age_is_that_of_the_oldest_unpublished_row(engine: Engine) -> None:
    # The alerting value was only checked to be on /metrics: a gauge stuck at 0, or reading the
    # newest row, passed, and the alert never fired through a Kafka outage.
    topic = new_id("outbox-age-")  # a topic of its own: no other test's rows count
    metrics = GatewayMetrics()
    store = Outbox(engine, metrics, 1_000_000)
    for minutes in (10, 1):
        head = _job_submitted("outbox-age")
        store.append(topic, [head])
        with engine.begin() as conn:
            conn.execute(text("UPDATE outbox SET created_at = now() - make_interval(mins => :minutes) "
                              "WHERE job_id = :job_id"), {"minutes": minutes, "job_id": head.job_id})
    # A broker that never answers: the rows stay unpublished, as through an outage.
    dead = EventProducer(KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"), "outbox-age")
    relay = Relay(engine, dead, [topic], RelaySettings(publish_timeout_s=0.2), metrics)
    relay.start()
    try:
        wait_for(lambda: _sample(metrics, "lotlens_outbox_backlog_events") == 2, "a backlog of 2 events",
                 timeout_s=20)
    finally:
        relay.stop(timeout_s=1.5)
    assert _sample(metrics, "lotlens_outbox_backlog_events") == 2
    assert _sample(metrics, "lotlens_outbox_oldest_age_seconds") == pytest.approx(600, abs=5)
