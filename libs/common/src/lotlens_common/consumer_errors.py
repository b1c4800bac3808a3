"""The errors a consumer returns in place of messages: which ones librdkafka retries by itself, and
how a reader that must reach an end (an operator command) waits out a broker away for a while.

The services' consumer loop logs a retried error and reads on for as long as it runs. An operator
command reads on through those errors, and through silence, for at most `patience_s` without a
message, then says in one line that Kafka did not answer. Ended by the first such error, or by
10 s without a message, a broker restart ended `dlq list`; with a broker gone for good a rebuild
waited for ever (librdkafka reports a broker that is down to its log, not to `consume`).
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException, Message

log = logging.getLogger(__name__)


def retried_by_librdkafka(error: KafkaError) -> bool:
    """Whether librdkafka goes on by itself after `error` (a broker unreachable for a moment, a
    topic not in the metadata yet): any error but a fatal one, which leaves the client unusable."""
    return not (error.fatal() or error.code() == KafkaError._FATAL)


class Patience:
    """Reads on through the errors librdkafka retries, at most `patience_s` without a message."""

    def __init__(self, patience_s: float) -> None:
        self._patience_s = patience_s
        self._last_data = time.monotonic()
        self._error: KafkaError | None = None

    def is_data(self, message: Message) -> bool:
        """True for a message; False for a retried error (or a partition's end); a fatal error
        raises `KafkaException`."""
        error = message.error()
        if error is None:
            self._last_data, self._error = time.monotonic(), None
            return True
        if error.code() == KafkaError._PARTITION_EOF:
            return False
        if not retried_by_librdkafka(error):
            raise KafkaException(error)
        if self._error is None:  # once until the next message, not once per retry
            log.warning("Kafka: %s; reading on for up to %.0f s", error.str(), self._patience_s)
        self._error = error
        return False

    def worked(self) -> None:
        """The reader is back from its own work on the messages it got: that time was not Kafka's
        silence (a rebuild batch's minute in PostgreSQL ended the rebuild as "no message")."""
        self._last_data = time.monotonic()

    def check(self) -> None:
        """Raise `KafkaException` once `patience_s` have passed without a message."""
        silent_s = time.monotonic() - self._last_data
        if silent_s < self._patience_s:
            return
        why = f" (the last error: {self._error.str()})" if self._error is not None else ""
        code = self._error.code() if self._error is not None else KafkaError._TIMED_OUT
        raise KafkaException(KafkaError(code, f"no message for {silent_s:.0f} s{why}"))
