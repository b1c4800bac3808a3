"""The gateway's reading of the consumer groups: a reading the broker does not answer says why."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import pytest

from lotlens_gateway.group_lag import GroupLagCollector


class SilentBroker:
    """An admin client whose every answer times out (the future's TimeoutError carries no text)."""

    def describe_consumer_groups(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise FutureTimeout()

    def list_consumer_group_offsets(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise FutureTimeout()

    def list_offsets(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        raise FutureTimeout()

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        raise FutureTimeout()


def test_a_reading_that_timed_out_is_logged_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    # The line read "consumer group lag not read: " and nothing more: str() of a TimeoutError is empty.
    collector = GroupLagCollector(SilentBroker, {"lotlens-translator": ()}, cache_s=0.0)
    with caplog.at_level(logging.WARNING, logger="lotlens_gateway.group_lag"):
        assert collector.groups() is None
    [line] = [record.getMessage() for record in caplog.records]
    assert line.startswith("consumer group lag not read: ") and "TimeoutError" in line, line


class HangingBroker(SilentBroker):
    """A broker that takes `hold` (an Event) to answer, then times out: Kafka down, as a scrape sees it."""

    def __init__(self) -> None:
        self.hold = threading.Event()

    def describe_consumer_groups(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.hold.wait(30)
        raise FutureTimeout()


def test_a_scrape_does_not_wait_for_a_broker_that_does_not_answer() -> None:
    # Read within the scrape, a broker that did not answer held the gateway's /metrics past an
    # HTTP client's 5 s timeout: every gateway figure was lost, the outbox backlog included, just
    # while Kafka was down (tests/integration/test_gateway_outbox.py failed on it).
    broker = HangingBroker()
    collector = GroupLagCollector(lambda: broker, {"lotlens-translator": ()}, scrape_wait_s=0.2)
    started = time.monotonic()
    families = {family.name: family for family in collector.collect()}
    assert time.monotonic() - started < 5.0  # the scrape's own bound is 0.2 s; generous for load
    assert [sample.value for sample in families["lotlens_kafka_group_lag_read"].samples] == [0]
    assert families["lotlens_kafka_group_members"].samples == []
    broker.hold.set()  # the reading on its own thread ends (here: refused)
