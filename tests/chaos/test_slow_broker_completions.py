"""A broker whose acknowledgements come later than the result-store's wait: a job is still announced
once. Through toxiproxy, as the chaos run's network faults."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx2
import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from sqlalchemy import Engine, insert

from chaos.network import Toxiproxy
from lotlens_common.envelope import decode
from lotlens_common.events import JobCompleted
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.settings import KafkaSettings
from lotlens_common.tables import jobs
from lotlens_result_store.completion import publish_completions
from tests.conftest import new_id
from tests.events import read_messages_to_end
from tests.integration.result_store.support import job_published
from tests.private_kafka import PrivateKafka

ACK_LATENCY_MS = 1500


class ImpatientProducer(EventProducer):
    """Waits 0.2 s for acknowledgements, as a 30 s wait ends inside a longer outage."""

    def flush(self, timeout_s: float = 0.2) -> None:
        super().flush(timeout_s)


def test_a_job_is_announced_once_when_its_acknowledgement_comes_after_the_wait(
        proxied_broker: tuple[Toxiproxy, PrivateKafka], engine: Engine) -> None:
    # The copy the first round sent was still in flight when its wait ended; librdkafka delivered
    # it, and the next round, seeing the job unannounced, published a second copy (the CI's
    # 40-second outage test found one job announced twice).
    proxy, broker = proxied_broker
    bootstrap = broker.bootstrap
    topic = new_id("completions-")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(60)
    job_id = new_id("job-")
    with engine.begin() as conn:
        conn.execute(insert(jobs).values(job_id=job_id, client_id="c", status="completed", total_lots=1,
                                         processed_lots=1, created_at=datetime.now(UTC),
                                         completed_at=datetime.now(UTC), usage={}))
    producer = ImpatientProducer(KafkaSettings(bootstrap_servers=bootstrap), new_id("result-store-"))
    producer.publish_raw(topic, b"warm-up", b"{}", [])  # connected, its producer id taken, before the
    producer.flush(60)                                # acknowledgements slow down
    slow = {"name": "slow", "type": "latency", "stream": "downstream",
            "attributes": {"latency": ACK_LATENCY_MS}}
    httpx2.post(f"{proxy.api}/proxies/kafka/toxics", json=slow, timeout=10).raise_for_status()
    with pytest.raises(PublishError):
        publish_completions(engine, producer, topic, [job_id])
    assert not job_published(engine, job_id)
    deadline = time.monotonic() + 30
    while not job_published(engine, job_id):
        assert time.monotonic() < deadline, "the job was never marked announced"
        try:
            publish_completions(engine, producer, topic, [job_id])
        except PublishError:
            time.sleep(0.1)
    httpx2.delete(f"{proxy.api}/proxies/kafka/toxics/slow", timeout=10).raise_for_status()
    announced = [decode(m.value() or b"") for m in read_messages_to_end(bootstrap, topic)[1:]]
    copies = [e for e in announced if isinstance(e.event, JobCompleted)]
    assert [e.job_id for e in copies] == [job_id], f"{len(copies)} copies of JobCompleted"
