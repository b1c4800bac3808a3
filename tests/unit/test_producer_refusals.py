"""Which Kafka refusals `producer.message_refused` takes for good: those that would refuse the same
messages again however well Kafka takes others (pure: KafkaErrors made as librdkafka reports them)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from lotlens_common.producer import PublishError, message_refused


def broker_refused(*codes: int, unacknowledged: int = 0) -> PublishError:
    """What `flush` raises when the broker answered these codes in delivery reports."""
    failures = [KafkaError(code) for code in codes]
    return PublishError(f"{unacknowledged} unacknowledged, {len(failures)} failed", unacknowledged, failures)


def produce_refused(code: int) -> KafkaException:
    """What `Producer.produce` raises, before sending, for a message it will not queue."""
    return KafkaException(KafkaError(code))


@pytest.mark.parametrize(("refusal", "for_good"), [
    # The topic's max.message.bytes set lower than the producer's: clears once it is set back.
    (broker_refused(KafkaError.MSG_SIZE_TOO_LARGE), False),
    (broker_refused(KafkaError.RECORD_LIST_TOO_LARGE), False),
    # The broker refusing the messages' form: sent again, refused again.
    (broker_refused(KafkaError.INVALID_RECORD), True),
    (broker_refused(KafkaError.INVALID_MSG), True),
    # Some only timed out: the broker may take them, and the batch, once it answers.
    (broker_refused(KafkaError.INVALID_RECORD, KafkaError._MSG_TIMED_OUT), False),
    (broker_refused(KafkaError.INVALID_RECORD, unacknowledged=1), False),
    (broker_refused(), False),
    # Over the producer's own message.max.bytes: refused before sending, a defect.
    (produce_refused(KafkaError.MSG_SIZE_TOO_LARGE), True),
    # An unknown topic refuses every event alike, and clears once it is created.
    (produce_refused(KafkaError._UNKNOWN_TOPIC), False),
    (KafkaException(), False),
    (RuntimeError("not Kafka's"), False),
], ids=["broker-msg-size", "broker-record-list-size", "invalid-record", "invalid-msg",
        "invalid-record-and-timed-out", "invalid-record-and-unanswered", "nothing-answered",
        "produce-msg-size", "produce-unknown-topic", "produce-no-error", "other"])
def test_only_a_refusal_sent_again_to_the_same_answer_is_for_good(refusal: Exception, for_good: bool) -> None:
    assert message_refused(refusal) is for_good
