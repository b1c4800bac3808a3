"""A consumer's `/readyz` (result-store, webhook-dispatcher, the stages): 503 while the Kafka
brokers do not answer, as the README promises, ready while PostgreSQL and Kafka both do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
import pytest
from sqlalchemy import Engine

from lotlens_common.producer import EventProducer
from lotlens_common.service import serve_operations
from lotlens_common.settings import KafkaSettings, ServiceSettings
from tests.servers import free_port

pytestmark = pytest.mark.integration


@contextmanager
def operations_port(settings: ServiceSettings, engine: Engine, kafka: KafkaSettings) -> Iterator[str]:
    """A consumer's operations endpoint whose producer talks to `kafka` (its base URL)."""
    port = free_port()
    server = serve_operations(settings, port, engine, EventProducer(kafka, "readyz-test"))
    assert server is not None
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_readyz_is_503_naming_kafka_while_no_broker_answers(settings: ServiceSettings,
                                                             engine: Engine) -> None:
    # No test held a consumer to the README's promise: a check of the brokers that always passed
    # would have kept every consumer "ready" through a Kafka outage, unseen.
    silent = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")  # nothing listens there
    with operations_port(settings, engine, silent) as url:
        answer = httpx2.get(f"{url}/readyz", timeout=30)
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"] == "ok" and body["checks"]["kafka"] != "ok", body


def test_readyz_is_200_while_postgresql_and_kafka_answer(settings: ServiceSettings, engine: Engine) -> None:
    with operations_port(settings, engine, settings.kafka) as url:
        answer = httpx2.get(f"{url}/readyz", timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["checks"] == {"database": "ok", "kafka": "ok"}
