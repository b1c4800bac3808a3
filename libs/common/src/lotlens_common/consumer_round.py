"""One round of the consumer loop (one `consume` to the next): what handling its batches needs,
and the two ways it ends early, `stop` set while a failure was retried and a statement that
timed out. Apart from kafka.py, which runs the rounds."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import Message
from sqlalchemy.exc import TimeoutError as PoolTimedOut

from lotlens_common.consumer_position import FailedTries
from lotlens_common.ops import STALE_AFTER_S, heartbeat, liveness_clock
from lotlens_common.producer import EventProducer
from lotlens_common.settings import TopicSettings

if TYPE_CHECKING:
    from lotlens_common.kafka import ConsumerSpec

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """`stop` was set while a transient failure was retried: the message is unsettled, not poison."""


class TimedOut(Exception):
    """A try's statement was cancelled by `statement_timeout`, or the round is too old to begin
    another try: the round ends at `message` (after it, if it was `settled`: dead-lettered)."""

    def __init__(self, message: Message, settled: bool) -> None:
        super().__init__()
        self.message, self.settled = message, settled


@dataclass
class Round:
    """What handling a consumed batch needs besides the batch, and when its round stops
    beginning tries (`ConsumerSpec.round_tries_s`; set at each `consume`)."""

    group: str
    spec: ConsumerSpec
    topics: TopicSettings
    producer: EventProducer
    stop: threading.Event
    tries: FailedTries
    pool_stuck_after_s: float
    tries_until: float = 0.0
    tried: bool = False

    def begin(self) -> None:
        """A new round: `consume` was just called."""
        self.tries_until, self.tried = time.monotonic() + self.spec.round_tries_s, False

    def may_try(self, message: Message) -> None:
        """Beat the liveness heartbeat before a try (each may take a whole statement_timeout);
        end the round at `message`, unsettled, if it is too late to begin one (never its first)."""
        heartbeat(loop_name())
        if self.tried and time.monotonic() > self.tries_until:
            raise TimedOut(message, False)
        self.tried = True


class PoolWait:
    """Whether a loop retrying transient failures of one call still beats its heartbeat.

    A connection pool timing out (every connection busy past its wait) is transient while
    PostgreSQL stalls, but a pool that keeps timing out with no database error between is this
    process's own (a leaked connection, a handler holding two): retried as an outage for good,
    it held every partition of the consumer while `/livez` stayed green. Past `stuck_after_s`
    the loop stops beating, so `/livez` fails and the process is restarted."""

    def __init__(self, stuck_after_s: float) -> None:
        self.stuck_after_s = stuck_after_s
        self.since: float | None = None
        self.stuck = False

    def still_alive(self, failure: BaseException) -> bool:
        """Whether the loop beats after this transient failure (logs an error once when not)."""
        if not isinstance(failure, PoolTimedOut):
            self.since, self.stuck = None, False  # the database answered, with an error: an outage
            return True
        now = liveness_clock()
        if self.since is None:
            self.since = now
        if now - self.since < self.stuck_after_s:
            return True
        if not self.stuck:
            self.stuck = True
            log.error("%s: the connection pool has timed out for %.0f s with no database error "
                      "(a leaked connection, or a handler holding two?): no more heartbeats, so "
                      "/livez fails within %.0f s and the process restarts", loop_name(),
                      now - self.since, STALE_AFTER_S)
        return False


def loop_name() -> str:
    """The liveness name of the consumer loop running on this thread."""
    return f"consumer:{threading.current_thread().name}"
