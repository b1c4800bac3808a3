"""The example subscriber (examples/subscriber) against the whole stack: it collects the lot
results of finished jobs, survives a SIGKILL and restart, and neither an operator's replay of a
dead letter (`lotlens-admin dlq replay`) nor a re-reading from the start changes anything."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from lotlens_common.dead_letters import REPLAY_GROUP
from lotlens_common.kafka import dead_letter
from lotlens_common.producer import EventProducer
from lotlens_common.settings import RESULT_STORE_GROUP, KafkaSettings
from tests.conftest import new_id
from tests.e2e.harness import Stack
from tests.events import read_messages_to_end
from tests.example_subscriber import Subscriber
from tests.integration.admin_support import admin_env, run_admin
from tests.public_events import headers_of
from tests.seeds import seed_client_class

pytestmark = pytest.mark.e2e
LANGUAGES = ["en", "de"]


def lots(images: str, prefix: str) -> list[dict[str, Any]]:
    """Three lots; the last one's only image is missing, so it fails."""
    return [{"lot_id": f"{prefix}-{i}", "additional_info": f"Car {i}",
             "image_urls": [f"{images}/{prefix}-{i}{'-missing' if i == 2 else ''}.png"]} for i in range(3)]


def replay_lot_failed(stack: Stack, job_id: str) -> str:
    """What on-call does after the result-store dead-lettered a job's `LotFailed`: `lotlens-admin
    dlq replay` puts the copy back on its topic, after the job's later events; its event id."""
    kafka = KafkaSettings(bootstrap_servers=stack.infra.kafka_bootstrap)
    failed = next(m for topic in (stack.topics.vision, stack.topics.translation)
                  for m in read_messages_to_end(kafka.bootstrap_servers, topic)
                  if m.key() == job_id.encode() and headers_of(m).get("type") == "LotFailed")
    group = f"{stack.topics.submissions}.{RESULT_STORE_GROUP}"  # the stack's KAFKA_GROUP_PREFIX
    producer = EventProducer(kafka, "e2e")
    # As the consumer loop dead-letters a message its handler kept failing on.
    dead_letter(producer, stack.topics, failed, group, RuntimeError("database unavailable"))
    producer.flush()
    replay = run_admin(admin_env(kafka.bootstrap_servers, stack.database_url, stack.topics),
                       "dlq", "replay", "--group", group)
    assert replay.returncode == 0 and replay.stdout.splitlines()[-1] == "1 dead letters replayed", replay
    copies = [m for m in read_messages_to_end(kafka.bootstrap_servers, failed.topic() or "")
              if headers_of(m).get(REPLAY_GROUP) == group]
    assert [m.value() for m in copies] == [failed.value()]
    event_id: str = json.loads(failed.value() or b"")["event_id"]
    return event_id


def test_the_example_subscriber_collects_results_survives_a_restart_and_ignores_replays_and_rereads(
        stack: Stack, images: str, tmp_path: Path) -> None:
    client = seed_client_class()(stack.url, stack.client_key)
    topics = f"{stack.topics.vision},{stack.topics.translation},{stack.topics.completions}"
    subscriber = Subscriber(stack.infra.kafka_bootstrap, topics, tmp_path / "results.sqlite3",
                            tmp_path / "subscriber.log")
    group = new_id("acme-")
    subscriber.start(group, "first.log")
    first, error = client.batch_generate(lots(images, new_id("a")), languages=LANGUAGES)
    assert error is None, error
    second, error = client.batch_generate(lots(images, new_id("b")), languages=LANGUAGES)
    assert error is None, error
    subscriber.wait_reported(first)
    results = subscriber.rows("SELECT lot_id, status, descriptions, reason FROM lot_results "
                              "WHERE job_id = ? ORDER BY lot_id", first)
    assert [r[1] for r in results] == ["completed", "completed", "failed"]
    assert all('"en"' in r[2] and '"de"' in r[2] for r in results[:2])
    assert results[2][3]
    assert subscriber.rows("SELECT status, processed_lots, failed_lots FROM jobs WHERE job_id = ?",
                           first) == [("completed", 2, 1)]

    # Killed, and restarted in the same group: it picks up from its committed offsets and
    # reports the second job (finished while it was down, or after).
    subscriber.stop(signal.SIGKILL)
    subscriber.start(group, "restarted.log")
    subscriber.wait_reported(second)
    before = subscriber.snapshot()
    assert len(before[1]) == 6 and len(before[2]) == 2 and len(before[0]) >= 8

    # An operator replays the first job's dead-lettered LotFailed, long after its JobCompleted:
    # the copy (header lotlens.replay.group) is skipped as the duplicate it is.
    replayed = replay_lot_failed(stack, first)
    subscriber.wait_logged(f"skipping duplicate LotFailed {replayed}")
    subscriber.stop(signal.SIGTERM)
    assert subscriber.snapshot() == before

    # A new group reads every event again from the start: each one is a duplicate by its id
    # (the replayed copy too).
    subscriber.start(new_id("acme-reread-"), "reread.log")
    subscriber.wait_logged("skipping duplicate", len(before[0]) + 1)
    subscriber.stop(signal.SIGTERM)
    assert subscriber.snapshot() == before
