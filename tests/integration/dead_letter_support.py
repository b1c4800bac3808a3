"""Helpers of the dead-letter tests: events as bytes, consumer groups on the submissions topic
that dead-letter what they cannot handle, exactly as the services' loop does."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import orjson

from lotlens_common.envelope import Envelope, encode
from lotlens_common.events import JobCancelled
from lotlens_common.kafka import ConsumerSpec
from lotlens_common.settings import ServiceSettings
from tests.integration.consumer_loops import consumer_loops


def cancelled(job_id: str, version: int = 1) -> bytes:
    """A JobCancelled as its wire bytes, claiming the given version."""
    doc = orjson.loads(encode(Envelope(event=JobCancelled(
        job_id=job_id, cancelled_at="2026-01-01T00:00:00Z"), client_id="c")))
    doc["version"] = version
    return bytes(orjson.dumps(doc))


@contextmanager
def consuming(settings: ServiceSettings, groups: Sequence[str],
              seen: dict[str, list[str]]) -> Iterator[None]:
    """One consumer per group on the submissions topic; job "poison" always fails."""

    def handler(group: str) -> Callable[[Sequence[Envelope]], None]:
        def handle(envelopes: Sequence[Envelope]) -> None:
            if any(e.job_id == "poison" for e in envelopes):
                raise ValueError("this job is poison")
            seen[group].extend(e.job_id for e in envelopes)
        return handle

    with consumer_loops(settings.kafka, settings.topics, [
            ConsumerSpec(group_id=group, topics=[settings.topics.submissions], handler=handler(group))
            for group in groups]):
        yield
