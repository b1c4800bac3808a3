"""A broker whose acknowledgements come later than the relay's deadline: the outbox still drains
(a quota, a slow replica, a far region). Through toxiproxy, as the chaos run's network faults."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx2
import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from sqlalchemy import Engine, func, select

from chaos.network import Toxiproxy
from lotlens_common.envelope import Envelope
from lotlens_common.events import JobSubmitted, LotSubmitted
from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings
from lotlens_common.tables import outbox
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.outbox import Outbox
from lotlens_gateway.relay import Relay, RelaySettings
from tests.conftest import new_id
from tests.integration.gateway_support import consume
from tests.private_kafka import PrivateKafka


@pytest.fixture
def slow_broker(proxied_broker: tuple[Toxiproxy, PrivateKafka]) -> str:
    """A private broker whose every answer is held back 0.3 s on its way to the client."""
    proxy, broker = proxied_broker
    body = {"name": "slow", "type": "latency", "stream": "downstream", "attributes": {"latency": 300}}
    httpx2.post(f"{proxy.api}/proxies/kafka/toxics", json=body, timeout=10).raise_for_status()
    return broker.bootstrap


def _job(lots: int) -> list[Envelope]:
    job_id, now = new_id("job-"), datetime.now(UTC)
    head = Envelope(JobSubmitted(job_id=job_id, client_id="c", api_version="1.0.0", languages=("en",),
                                 total_lots=lots, webhook_urls=(), created_at=now, estimated_completion=now),
                    client_id="c")
    return [head, *(Envelope(LotSubmitted(job_id=job_id, lot_id=f"{job_id}-{i}", seq=i, total_lots=lots,
                                          additional_info="", image_urls=(), languages=("en",)),
                             client_id="c") for i in range(lots))]


def _unpublished(engine: Engine, topic: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(outbox).where(
            outbox.c.topic == topic, outbox.c.published_at.is_(None))).scalar_one())


def test_the_outbox_drains_through_a_broker_slower_than_the_relays_deadline(
        slow_broker: str, engine: Engine) -> None:
    # Every round waited 0.1 s for acknowledgements that came after 0.3 s, failed whole, and sent
    # the same rows again: the backlog never shrank, whatever the broker had already written.
    topic = new_id("slow-")
    admin = AdminClient({"bootstrap.servers": slow_broker})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(60)
    metrics = GatewayMetrics()
    job = _job(50)
    Outbox(engine, metrics, 1_000_000).append(topic, job)
    kafka = KafkaSettings(bootstrap_servers=slow_broker)
    relay = Relay(engine, EventProducer(kafka, new_id("relay-slow-")), [topic],
                  RelaySettings(publish_timeout_s=0.1), metrics)
    rounds, deadline = 0, time.monotonic() + 60
    while _unpublished(engine, topic) and time.monotonic() < deadline:
        relay.run_round()  # the old relay raised PublishError here, every round
        rounds += 1
    assert _unpublished(engine, topic) == 0, f"after {rounds} rounds the backlog had not drained"
    seen = {envelope.event_id for _, envelope in consume(slow_broker, topic, len(job), timeout_s=60)}
    assert seen >= {envelope.event_id for envelope in job}
