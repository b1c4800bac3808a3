"""Fixtures of the result-store tests: the handler and producers wired like the service wires them."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest
from sqlalchemy import Engine

from lotlens_common.producer import EventProducer
from lotlens_common.settings import ServiceSettings, TopicSettings
from lotlens_result_store.handlers import handle
from tests.integration.result_store.support import Apply


@pytest.fixture()
def producer(settings: ServiceSettings) -> Iterator[EventProducer]:
    """The producer the result-store publishes JobCompleted with."""
    service_producer = EventProducer(settings.kafka, "result-store-test")
    yield service_producer
    service_producer.flush()


@pytest.fixture()
def apply(engine: Engine, producer: EventProducer, topics: TopicSettings) -> Apply:
    """The batch handler, wired like the service wires it."""
    return partial(handle, engine, producer, topics.completions)


@pytest.fixture()
def publisher(settings: ServiceSettings) -> EventProducer:
    """A producer standing in for the other services."""
    return EventProducer(settings.kafka, "pipeline-test")
