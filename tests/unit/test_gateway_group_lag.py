"""The gateway's reading of the consumer groups: a reading the broker does not answer says why."""

from __future__ import annotations

import logging
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


def test_a_reading_that_timed_out_is_logged_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    # The line read "consumer group lag not read: " and nothing more: str() of a TimeoutError is empty.
    collector = GroupLagCollector(SilentBroker, ["lotlens-translator"], cache_s=0.0)
    with caplog.at_level(logging.WARNING, logger="lotlens_gateway.group_lag"):
        assert collector.groups() is None
    [line] = [record.getMessage() for record in caplog.records]
    assert line.startswith("consumer group lag not read: ") and "TimeoutError" in line, line
