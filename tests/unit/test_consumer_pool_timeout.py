"""A connection pool that times out (every connection busy past its wait) is an outage to the
consumer loop: the batch waits and is tried again, it is not poison; but one that keeps timing
out with no database error meanwhile is this process's own fault: the heartbeat stops."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
import sqlalchemy.exc

from lotlens_common import ops
from lotlens_common.consumer_round import loop_name
from lotlens_common.envelope import Envelope
from lotlens_common.kafka import is_transient
from lotlens_common.ops import STALE_AFTER_S
from lotlens_common.settings import KafkaSettings
from tests.unit.consumer_fakes import ClockedStop, FakeClock, FakeMessage, event, outage, run

POOL_STUCK_AFTER_S = 300.0  # KafkaSettings().pool_stuck_after_s, the default


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


# A pool whose every connection stays busy with no database error meanwhile is this process's own
# fault (a connection leak, a handler holding two connections): retried as an outage, every
# partition waited for good while /livez stayed green, so the pod was never restarted.
END = POOL_STUCK_AFTER_S + STALE_AFTER_S + 60  # the bound, then long enough for /livez to see it


def _loop_liveness(failure: Exception, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """Run the consumer loop over a handler that always fails with `failure` until the fake clock
    reaches END; the loops whose heartbeat is then stale, with their age."""
    clock = FakeClock()
    heartbeats = ops.Heartbeats(clock)
    monkeypatch.setattr(ops, "HEARTBEATS", heartbeats)

    def failing(_envelopes: Sequence[Envelope]) -> None:
        raise failure

    run([[FakeMessage(0, event(0))]], failing, stop=ClockedStop(clock, END))
    assert clock.now >= END
    return heartbeats.stale(STALE_AFTER_S)


def test_a_pool_timing_out_past_its_bound_stops_the_heartbeat_with_an_error_saying_why(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    assert KafkaSettings().pool_stuck_after_s == POOL_STUCK_AFTER_S
    with caplog.at_level(logging.ERROR, logger="lotlens_common"):
        stale = _loop_liveness(_pool_timed_out(), monkeypatch)
    assert list(stale) == [loop_name()], "the loop's heartbeat is stale: /livez fails"
    last_beat = END - stale[loop_name()]
    assert POOL_STUCK_AFTER_S - 16 < last_beat <= POOL_STUCK_AFTER_S, "it beat until the bound"
    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1 and "connection pool" in errors[0] and "restart" in errors[0], errors


def test_a_database_outage_keeps_the_heartbeat_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _loop_liveness(outage(), monkeypatch) == {}
