"""The public topics as a subscriber at the insurer sees them: every message the running stack
publishes there, read back with a plain confluent-kafka consumer, held to what the README, the
AsyncAPI document and the released JSON Schemas tell that subscriber."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from confluent_kafka import Message

from lotlens_client import LotLensClient
from tests.conftest import new_id
from tests.e2e.harness import Stack
from tests.e2e.workload import cars
from tests.events import read_events, read_messages_to_end
from tests.public_events import contract_errors, headers_of, public_topics
from tests.servers import WebhookReceiver

pytestmark = pytest.mark.e2e


def _finished(job_ids: set[str]) -> object:
    return lambda events: job_ids <= {e.job_id for e in events if e.type == "JobCompleted"}


def _by_job(messages: list[Message]) -> dict[str, list[Message]]:
    found: dict[str, list[Message]] = defaultdict(list)
    for message in messages:
        found[(message.key() or b"").decode()].append(message)
    return found


def test_every_public_event_of_a_real_run_holds_to_what_subscribers_are_told(
        stack: Stack, images: str, receiver: WebhookReceiver) -> None:
    prefix = new_id("pub")
    failing = {"lot_id": f"{prefix}-gone", "additional_info": "Car gone",
               "image_urls": [f"{images}/{prefix}-gone-missing.png"]}
    with LotLensClient(stack.url, stack.client_key) as sdk:
        translated = sdk.submit_job([*cars(images, 2, f"{prefix}-a"), failing], ["en", "de"],
                                    webhook=receiver.url).job_id
        english = sdk.submit_job(cars(images, 2, f"{prefix}-b"), ["en"]).job_id
        cancelled = sdk.submit_job(cars(images, 2, f"{prefix}-c"), ["en", "fr"]).job_id
        sdk.cancel_job(cancelled)
    jobs = {translated, english, cancelled}
    ended = read_events(stack.infra.kafka_bootstrap, stack.topics.completions,
                        _finished(jobs), timeout_s=180)  # type: ignore[arg-type]
    assert jobs <= {e.job_id for e in ended if e.type == "JobCompleted"}, "not every job finished"

    errors: list[str] = []
    seen: dict[str, set[str]] = defaultdict(set)
    for topic, listed in public_topics(stack.topics).items():
        messages = read_messages_to_end(stack.infra.kafka_bootstrap, topic)
        for message in messages:
            errors += contract_errors(message, listed)
            seen[topic].add(headers_of(message)["type"])
        for job_id, of_job in _by_job(messages).items():
            partitions = {m.partition() or 0 for m in of_job}
            if len(partitions) != 1:
                errors.append(f"{topic}: job {job_id}'s events on partitions {sorted(partitions)}")
        if topic == stack.topics.submissions:
            # One job's events in the order they were written: the job, its lots by position, the cancel.
            written = [json.loads(m.value() or b"") for m in _by_job(messages)[cancelled]]
            assert [(e["type"], e["data"].get("seq")) for e in written] == [
                ("JobSubmitted", None), ("LotSubmitted", 0), ("LotSubmitted", 1), ("JobCancelled", None)]
    assert errors == [], "\n".join(errors[:40])
    assert {"JobSubmitted", "LotSubmitted", "JobCancelled"} <= seen[stack.topics.submissions]
    assert {"LotFailed"} <= seen[stack.topics.vision]
    assert {"TranslationCompleted"} <= seen[stack.topics.translation]
