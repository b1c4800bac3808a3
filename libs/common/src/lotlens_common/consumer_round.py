"""One round of the consumer loop (one `consume` to the next): what handling its batches needs,
and the two ways it ends early, `stop` set while a failure was retried and a statement that
timed out. Apart from kafka.py, which runs the rounds."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import Message

from lotlens_common.consumer_position import FailedTries
from lotlens_common.ops import heartbeat
from lotlens_common.producer import EventProducer
from lotlens_common.settings import TopicSettings

if TYPE_CHECKING:
    from lotlens_common.kafka import ConsumerSpec


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


def loop_name() -> str:
    """The liveness name of the consumer loop running on this thread."""
    return f"consumer:{threading.current_thread().name}"
