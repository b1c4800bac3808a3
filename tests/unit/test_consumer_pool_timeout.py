"""A connection pool that times out (every connection busy past its wait) is an outage to the
consumer loop: the batch waits and is tried again, it is not poison."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy.exc

from lotlens_common.envelope import Envelope
from lotlens_common.kafka import is_transient
from tests.unit.consumer_fakes import FakeMessage, event, run


def _pool_timed_out() -> sqlalchemy.exc.TimeoutError:
    return sqlalchemy.exc.TimeoutError("QueuePool limit of size 20 overflow 10 reached, connection "
                                       "timed out, timeout 30.00 (test)")


def test_a_pool_timeout_is_transient() -> None:
    assert is_transient(_pool_timed_out())


def test_a_job_completed_met_by_a_pool_timeout_is_retried_not_dead_lettered() -> None:
    # Not a DBAPIError, it counted as poison: tried alone three times, then the JobCompleted went
    # to the dead-letter topic and that job's webhooks were never scheduled.
    tries: list[int] = []

    def pool_busy_four_times(envelopes: Sequence[Envelope]) -> None:
        tries.append(len(envelopes))
        if len(tries) <= 4:  # as poison: the batch's try and three alone
            raise _pool_timed_out()

    consumer, producer = run([[FakeMessage(0, event(0))]], pool_busy_four_times)
    assert producer.dead_letter_reasons() == []
    assert tries == [1] * 5 and consumer.stored == [0]
