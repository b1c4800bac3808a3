"""A rebuild's replay round takes as long as its events, not a second and a half more: its last
round runs with the live read models locked against writes."""

from __future__ import annotations

import time

import confluent_kafka
import pytest
from sqlalchemy import Engine

from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings, TopicSettings
from lotlens_result_store import replay
from lotlens_result_store.rebuild import RebuildOptions, rebuild
from tests.integration.result_store.support import job_script, publish

pytestmark = pytest.mark.integration

# The broker answers a fetch of messages it holds in milliseconds. Each of the two waits found came
# to 500 ms: librdkafka's retry of the start-offset lookup of a partition whose leader it did not
# know yet, and a fetch the broker held for a partition read to its end while the other partitions'
# first fetch waited behind it (one run in ten under load).
PROMPT_S = 0.4


def test_a_replay_round_asks_for_the_events_left_and_waits_for_no_more(
        monkeypatch: pytest.MonkeyPatch, own_engine: Engine, own_settings: ServiceSettings,
        publisher: EventProducer, topics: TopicSettings) -> None:
    # Each round asked for a whole batch (2,000) and so waited out consume's 1 s for messages that
    # were not there, after a first fetch held 0.5 s by that offset lookup: 1.5 s a round.
    script = job_script(2)
    publish(publisher, topics, script)
    publisher.flush()
    consumed: list[tuple[int, int, float]] = []  # (messages asked for, got, seconds it took)

    class Recording(confluent_kafka.Consumer):
        def consume(self, num_messages: int = 1, timeout: float = -1) -> list[confluent_kafka.Message]:
            started = time.monotonic()
            got = super().consume(num_messages, timeout)
            consumed.append((num_messages, len(got), time.monotonic() - started))
            return got

    monkeypatch.setattr(replay, "Consumer", Recording)
    result = rebuild(own_engine, own_settings.kafka, topics, RebuildOptions(swap=False), lambda _: None)
    events = len(script.all_events())
    assert result.events == events
    assert consumed and consumed[0][0] <= events, f"asked for more than the {events} events: {consumed}"
    waited = sum(seconds for _, _, seconds in consumed)
    assert waited < PROMPT_S, f"{waited:.2f} s waiting for {events} events: {consumed}"
