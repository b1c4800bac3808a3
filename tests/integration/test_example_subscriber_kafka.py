"""The example subscriber (examples/subscriber) on the real broker, without LotLens running:
started before LotLens has created its topics, it waits for them instead of exiting."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from lotlens_common.producer import EventProducer
from lotlens_common.settings import KafkaSettings
from tests.conftest import Infra, delete_topics, new_id
from tests.example_subscriber import Subscriber
from tests.polling import wait_for

pytestmark = pytest.mark.integration


def translation_completed(job_id: str, lot_id: str) -> bytes:
    """A TranslationCompleted envelope as LotLens writes it (the fields the example reads)."""
    return json.dumps({"event_id": new_id("e-"), "type": "TranslationCompleted", "version": 1,
                       "occurred_at": "2026-03-01T12:00:00+00:00", "job_id": job_id, "client_id": "c",
                       "trace": {}, "data": {"job_id": job_id, "lot_id": lot_id,
                                             "descriptions": {"en": "<p>A dent.</p>"}}}).encode()


def test_the_example_subscriber_started_before_its_topic_exists_waits_for_it(
        infra: Infra, tmp_path: Path) -> None:
    # It raised librdkafka's "Subscribed topic not available" and exited: a copied subscriber
    # deployed beside a fresh LotLens crash-looped until migrate had created the topics.
    kafka = KafkaSettings(bootstrap_servers=infra.kafka_bootstrap)
    topic = new_id("t") + ".translation"
    subscriber = Subscriber(infra.kafka_bootstrap, topic, tmp_path / "results.sqlite3", tmp_path / "x.log")
    try:
        subscriber.start(new_id("acme-"), "subscriber.log")
        subscriber.wait_logged("Subscribed topic not available")
        assert subscriber.running(), subscriber.log.read_text()

        admin = AdminClient(kafka.client_config())  # kept: a client dropped now never sends the request
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
        producer = EventProducer(kafka, "test")
        producer.publish_raw(topic, b"job-1", translation_completed("job-1", "lot-1"),
                             [("type", b"TranslationCompleted")])
        producer.flush()

        def stored() -> bool:
            if subscriber.rows("SELECT lot_id FROM lot_results WHERE job_id = 'job-1'"):
                return True
            assert subscriber.running(), subscriber.log.read_text()
            return False

        wait_for(stored, lambda: f"the lot's result stored: {subscriber.log.read_text()}", timeout_s=60,
                 every_s=0.2)
        subscriber.stop(signal.SIGTERM)
        assert subscriber.process is not None and subscriber.process.returncode == 0
    finally:
        if subscriber.running():
            subscriber.stop(signal.SIGKILL)
        delete_topics(kafka, [topic])
