"""A Kafka outage longer than the producer's message timeout: each job's events still reach the
topic in the order the gateway accepted them (the contract downstream subscribers rely on).

librdkafka fails a message once it has waited `message.timeout.ms` (5 minutes by default) and
sends those queued behind it as soon as the broker is back; the relay sent the failed one again
afterwards, behind a later event of the same job. The test shortens librdkafka's default timeout
(and its reconnect backoff, in proportion) instead of waiting minutes, and takes the broker away
by disabling the toxiproxy proxy every client reaches it through.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx2
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from sqlalchemy import Engine, func, select

from chaos.network import Toxiproxy
from lotlens_common import producer as producer_module
from lotlens_common.envelope import Envelope, decode
from lotlens_common.events import JobSubmitted, LotSubmitted
from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings
from lotlens_common.tables import outbox
from lotlens_gateway.metrics import GatewayMetrics
from lotlens_gateway.outbox import Outbox
from lotlens_gateway.relay import Relay, RelaySettings
from tests.conftest import new_id
from tests.events import read_messages_to_end
from tests.private_kafka import PrivateKafka

MESSAGE_TIMEOUT_S = 10.0
# librdkafka's defaults where the producer's configuration names none: the 5-minute message
# timeout shortened, and the reconnect backoff (at most 10 s) with it, so the broker's return is
# seen before the later event has waited out its own timeout too.
_SHORTENED = {"message.timeout.ms": int(MESSAGE_TIMEOUT_S * 1000), "reconnect.backoff.max.ms": 300}


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every producer made from here on starts from the shortened defaults."""
    monkeypatch.setattr(producer_module, "Producer", lambda config: Producer({**_SHORTENED, **config}))


def _set_reachable(proxy: Toxiproxy, reachable: bool) -> None:
    """Disabled, the proxy closes its connections and refuses new ones: the broker is gone."""
    httpx2.post(f"{proxy.api}/proxies/kafka", json={"enabled": reachable}, timeout=10).raise_for_status()


def _lot(job_id: str, seq: int) -> Envelope:
    return Envelope(LotSubmitted(job_id=job_id, lot_id=f"{job_id}-{seq}", seq=seq, total_lots=2,
                                 additional_info="", image_urls=(), languages=("en",)), client_id="c")


def _unpublished(engine: Engine, topic: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(outbox).where(
            outbox.c.topic == topic, outbox.c.published_at.is_(None))).scalar_one())


def _sleep_until(moment: float) -> None:
    time.sleep(max(moment - time.monotonic(), 0.0))


def _drain(relay: Relay, engine: Engine, topic: str) -> None:
    deadline = time.monotonic() + 20
    while _unpublished(engine, topic) and time.monotonic() < deadline:
        relay.run_round()
    assert _unpublished(engine, topic) == 0, "the outbox did not drain"


def _first_occurrences(events: list[tuple[bytes, Envelope]]) -> list[str]:
    """Event ids in the order a subscriber skipping duplicates acts on them."""
    seen: dict[str, None] = {}
    for _, envelope in events:
        seen.setdefault(envelope.event_id, None)
    return list(seen)


def test_a_jobs_events_keep_their_order_through_an_outage_longer_than_the_message_timeout(
        proxied_broker: tuple[Toxiproxy, PrivateKafka], engine: Engine, short_timeouts: None) -> None:
    proxy, broker = proxied_broker
    topic = new_id("order-")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(60)
    metrics = GatewayMetrics()
    job_id, now = new_id("job-"), datetime.now(UTC)
    head = Envelope(JobSubmitted(job_id=job_id, client_id="c", api_version="1.0.0", languages=("en",),
                                 total_lots=2, webhook_urls=(), created_at=now, estimated_completion=now),
                    client_id="c")
    earlier, later = _lot(job_id, 0), _lot(job_id, 1)
    store = Outbox(engine, metrics, 1_000_000)
    relay = Relay(engine, EventProducer(KafkaSettings(bootstrap_servers=broker.bootstrap), new_id("relay-")),
                  [topic], RelaySettings(publish_timeout_s=3.0), metrics)
    store.append(topic, [head])
    _drain(relay, engine, topic)  # the producer has its id and the topic's leader from here on

    _set_reachable(proxy, False)
    store.append(topic, [earlier])
    earlier_sent = time.monotonic()
    relay.run_round()  # the producer holds the earlier event now (its wait and ping take 5 s)
    store.append(topic, [later])
    relay.run_round()  # ... and the later one behind it
    # Back between the rounds, once the earlier event's timeout is over (librdkafka looks once a
    # second) and before the later one's, as a broker returning during the relay's pause or its
    # wait for acknowledgements after a 5-minute outage.
    _sleep_until(earlier_sent + MESSAGE_TIMEOUT_S + 1.2)
    _set_reachable(proxy, True)

    _drain(relay, engine, topic)
    # Everything the topic holds, duplicates too (a resent event may also have been written), read to
    # its end: a new group's first fetch took more than the 5 s a read for a while had under CI's load.
    written = read_messages_to_end(broker.bootstrap, topic)
    published = [(m.key() or b"", decode(m.value() or b"")) for m in written]
    names = {head.event_id: "JobSubmitted", earlier.event_id: "lot 0", later.event_id: "lot 1"}
    order = [names[event_id] for event_id in _first_occurrences(published)]
    assert order == ["JobSubmitted", "lot 0", "lot 1"], f"the job's events reached the topic as {order}"
