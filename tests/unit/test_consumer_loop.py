"""The one consumer loop, driven with a fake consumer and producer (no broker): what is handled,
what is dead-lettered and which offsets are stored, in outages, shutdowns and poison batches."""

from __future__ import annotations

import importlib.util
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import orjson
from confluent_kafka import KafkaError, KafkaException
from sqlalchemy.exc import OperationalError

from lotlens_common import kafka
from lotlens_common.envelope import Envelope
from lotlens_common.kafka import TRANSIENT_ERRORS, ConsumerSpec
from lotlens_common.producer import EventProducer, PublishError
from lotlens_common.settings import KafkaSettings
from tests.unit.consumer_fakes import (
    TOPICS,
    FakeConsumer,
    FakeMessage,
    FakeProducer,
    FencedMessage,
    LosingProducer,
    event,
    outage,
    run,
    statement_timeout,
)


def job_ids_into(into: list[str]) -> Callable[[Sequence[Envelope]], None]:
    """A handler that notes the job id of every envelope it is given."""
    def handle(envelopes: Sequence[Envelope]) -> None:
        into.extend(envelope.job_id for envelope in envelopes)
    return handle


def test_shutdown_during_an_outage_dead_letters_nothing_and_stores_no_offset() -> None:
    stop = threading.Event()
    calls = []

    def database_down(envelopes: Sequence[Envelope]) -> None:
        calls.append(len(envelopes))
        if len(calls) == 2:
            stop.set()  # SIGTERM while PostgreSQL is down
        raise outage()

    consumer, producer = run([[FakeMessage(0, event(0)), FakeMessage(1, event(1))]], database_down, stop)
    assert producer.sent == [], "a valid message was dead-lettered during shutdown"
    assert consumer.stored == [], "an offset moved past a message that was never handled"


def test_shutdown_while_isolating_a_poison_message_keeps_the_settled_prefix_only() -> None:
    stop = threading.Event()
    poison, good = event(0), event(1)

    def handler(envelopes: Sequence[Envelope]) -> None:
        if len(envelopes) > 1 or envelopes[0].job_id == "job-0":
            raise ValueError("bad data")
        stop.set()
        raise outage()  # the database goes down while the valid message is handled alone

    consumer, producer = run([[FakeMessage(0, poison), FakeMessage(1, good)]], handler, stop)
    assert [value for _, value, _ in producer.sent] == [poison]
    assert consumer.stored == [0]


def test_a_poison_message_is_dead_lettered_once_and_the_rest_of_the_batch_goes_through() -> None:
    handled: list[str] = []

    def handler(envelopes: Sequence[Envelope]) -> None:
        if any(e.job_id == "job-1" for e in envelopes):
            raise ValueError("bad data")
        handled.extend(e.job_id for e in envelopes)

    messages = [FakeMessage(i, event(i)) for i in range(3)] + [FakeMessage(3, b"not json")]
    consumer, producer = run([messages], handler)
    assert handled == ["job-0", "job-2"]
    # In offset order: the undecodable one once the events before it are settled.
    assert producer.dead_letter_reasons() == ["handler-failed", "undecodable"]
    assert [dict(h)["dlq.offset"] for _, _, h in producer.sent] == [b"1", b"3"]
    assert all(dict(h)["dlq.group"] == b"g" for _, _, h in producer.sent)
    assert consumer.stored == [3]


def test_a_dead_letter_lost_by_a_flush_the_handler_made_is_sent_again_before_its_offset_moves() -> None:
    # The translator's and result-store's handlers flush the producer dead letters share: a
    # dead letter that could not be delivered failed the handler's flush instead, the handler
    # was retried, and the poison message's offset moved on with no dead letter anywhere.
    producer = LosingProducer()
    consumer, _ = run([[FakeMessage(10, b"not json"), FakeMessage(11, event(11))]],
                      lambda _envelopes: producer.flush(), producer=producer)
    assert [dict(h)["dlq.offset"] for _, _, h in producer.sent] == [b"10"]
    assert consumer.stored == [11]


def test_a_dead_letter_kafka_does_not_take_at_once_is_sent_again_not_a_crash() -> None:
    # The final flush was outside the retries: its PublishError left the loop and the process,
    # and on restart the same poison message did it again.
    producer = LosingProducer(failing=2)
    consumer, _ = run([[FakeMessage(10, b"not json")]], lambda _envelopes: None, producer=producer)
    assert [dict(h)["dlq.offset"] for _, _, h in producer.sent] == [b"10"]
    assert consumer.stored == [10]


def test_a_transient_failure_is_retried_until_it_passes() -> None:
    attempts: list[int] = []

    def flaky(envelopes: Sequence[Envelope]) -> None:
        attempts.append(len(envelopes))
        if len(attempts) < 3:
            raise PublishError("broker down")

    consumer, producer = run([[FakeMessage(0, event(0)), FakeMessage(1, event(1))]], flaky)
    assert attempts == [2, 2, 2] and producer.sent == [] and consumer.stored == [1]


def test_a_batch_is_handled_in_parts_of_at_most_the_batch_bytes() -> None:
    # A handler writes a batch's rows in one statement, and PostgreSQL takes at most 256 MB in
    # one jsonb value: a backlog of large events gathered in one batch was refused.
    handled: list[list[str]] = []
    messages = [FakeMessage(i, event(i)) for i in range(5)]
    consumer, _ = run([messages], lambda envelopes: handled.append([e.job_id for e in envelopes]),
                      settings=KafkaSettings(consume_batch_bytes=2 * len(event(0))))
    assert handled == [["job-0", "job-1"], ["job-2", "job-3"], ["job-4"]]
    assert consumer.stored == [1, 3, 4]


class _ProgramLimitExceeded(Exception):
    """What psycopg2 raises for SQLSTATE 54000, as an OperationalError's `orig`."""

    pgcode = "54000"


def test_a_statement_over_a_postgresql_limit_is_handled_one_by_one_not_retried_as_an_outage() -> None:
    # "total size of jsonb array elements exceeds the maximum of 268435455 bytes" is an
    # OperationalError to psycopg2: retried as an outage, its consumer stayed on the batch for good.
    stop, handled, refused = threading.Event(), list[str](), list[int]()

    def handler(envelopes: Sequence[Envelope]) -> None:
        if len(envelopes) > 1:
            refused.append(len(envelopes))
            if len(refused) == 3:
                stop.set()  # the old loop retried it for ever
            raise OperationalError("INSERT INTO lots ...", {}, _ProgramLimitExceeded("total size of jsonb"))
        handled.extend(e.job_id for e in envelopes)

    consumer, producer = run([[FakeMessage(0, event(0)), FakeMessage(1, event(1))]], handler, stop)
    assert (refused, handled) == ([2], ["job-0", "job-1"])
    assert producer.sent == [] and consumer.stored == [1]


def test_a_round_ended_by_a_timed_out_statement_seeks_each_partition_back_to_its_first_unsettled() -> None:
    # Each consume moved the fetch position of its partitions past the messages it returned:
    # those not settled when a statement timed out must be read again, on every partition.
    stop, handled = threading.Event(), list[str]()

    def handler(envelopes: Sequence[Envelope]) -> None:
        if any(e.job_id == "job-2" for e in envelopes):
            raise statement_timeout()
        handled.extend(e.job_id for e in envelopes)

    consumed = [FakeMessage(0, event(0)), FakeMessage(0, event(1), partition=1),
                FakeMessage(1, event(2)), FakeMessage(1, event(3), partition=1)]
    settings = KafkaSettings(consume_batch_bytes=len(event(0)) * 2)  # two batches of two
    consumer, producer = run([consumed], handler, stop, settings=settings)
    assert handled == ["job-0", "job-1"] and consumer.stored == [0, 0]
    assert sorted(consumer.sought) == [(0, 1), (1, 1)]
    assert producer.sent == [], "a try that timed out is tried again next round, not dead-lettered"


def future(n: int) -> bytes:
    doc = orjson.loads(event(n))
    doc["version"] = 99
    return orjson.dumps(doc)


def test_a_future_event_version_is_dead_lettered_with_its_reason_and_counted() -> None:
    handled: list[str] = []
    before = kafka.DEAD_LETTERS.labels(group="g", reason="future-version")._value.get()
    consumer, producer = run([[FakeMessage(0, future(0)), FakeMessage(1, event(1))]],
                             lambda envelopes: handled.extend(e.job_id for e in envelopes))
    assert handled == ["job-1"], "a version-99 event was handled as version 1"
    assert producer.dead_letter_reasons() == ["future-version"]
    assert b"version 99" in dict(producer.sent[0][2])["dlq.error"]
    assert kafka.DEAD_LETTERS.labels(group="g", reason="future-version")._value.get() == before + 1
    assert consumer.stored == [1]


def test_a_replayed_message_is_handled_by_the_group_it_is_addressed_to_alone() -> None:
    replayed = [("lotlens.replay.group", b"vision")]
    seen: dict[str, list[str]] = {"vision": [], "translator": []}
    for group in seen:
        consumer, _ = run([[FakeMessage(0, event(0), replayed), FakeMessage(1, event(1))]],
                          job_ids_into(seen[group]), group=group)
        assert consumer.stored == [1]
    assert seen == {"vision": ["job-0", "job-1"], "translator": ["job-1"]}


def test_events_of_types_the_handler_does_not_act_on_are_passed_over_unread() -> None:
    # Read, the LotSubmitted below would be dead-lettered (its body is not an envelope); passed
    # over by its `type` header, it is not even decoded. Its offset still moves on.
    handled: list[str] = []
    messages = [FakeMessage(0, event(0), [("type", b"JobCancelled")]),
                FakeMessage(1, b"not json", [("type", b"LotSubmitted")]),
                FakeMessage(2, event(2)),  # no type header: read
                FakeMessage(3, event(3), [("type", b"JobCancelled"), ("lotlens.replay.group", b"other")])]
    consumer, producer = run([messages], lambda envelopes: handled.extend(e.job_id for e in envelopes),
                             event_types=frozenset({"JobCancelled"}))
    assert handled == ["job-0", "job-2"]
    assert producer.sent == []
    assert consumer.stored == [3]


def test_a_header_that_is_not_utf8_is_no_reason_to_stop_consuming() -> None:
    # The payload decides what an unreadable `type` header cannot (it used to raise out of the
    # loop: the consumer died and read the same message again after every restart).
    garbled = [("type", b"\xffJob\xfe")]
    messages = [FakeMessage(0, event(0), garbled),
                FakeMessage(1, b"not json", garbled),  # read, undecodable: dead-lettered
                FakeMessage(2, event(2), [("lotlens.replay.group", b"\xff")])]  # a replay not addressed to us
    for acts_on, expected in ((frozenset({"JobCancelled"}), ["job-0"]), (frozenset({"LotSubmitted"}), [])):
        handled: list[str] = []
        consumer, producer = run([messages], job_ids_into(handled), event_types=acts_on)
        assert handled == expected
        assert len(producer.sent) == 1 and consumer.stored == [2]


def test_every_service_shares_the_one_list_of_transient_errors() -> None:
    # Read, not imported: importing a service's `__main__` starts it (its signal handlers).
    for module in ("lotlens_common.stage.service", "lotlens_result_store.__main__",
                   "lotlens_webhook_dispatcher.bootstrap"):
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None
        source = Path(spec.origin).read_text(encoding="utf-8")
        assert not re.search(r"^TRANSIENT\b", source, re.MULTILINE), f"{module} keeps its own list"
    assert "transient" not in ConsumerSpec.__dataclass_fields__, "a consumer can still bring its own list"
    assert {OperationalError, PublishError} <= set(TRANSIENT_ERRORS)


def test_a_client_failed_for_good_is_replaced_and_consuming_goes_on() -> None:
    handled: list[str] = []
    consumer, producer = run([[FakeMessage(0, event(0))], [FencedMessage()], [FakeMessage(1, event(1))]],
                             lambda envelopes: handled.extend(e.job_id for e in envelopes))
    assert handled == ["job-0", "job-1"]
    assert consumer.stored == [0, 1]
    assert (consumer.made, consumer.closed) == (2, 2), "the failed client was not replaced by a new one"
    assert producer.sent == []


class ErrorMessage(FakeMessage):
    """A consumer error librdkafka reports in a message and recovers from on its own."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(-1, b"")
        self.code, self.reason = code, reason

    def error(self) -> KafkaError:  # type: ignore[override]
        return KafkaError(self.code, self.reason)


def test_a_topic_not_known_yet_is_waited_for_not_a_reason_to_exit() -> None:
    # Seen on a broker started a moment before the services: the topics just created are not in
    # its metadata yet. The worker died and took the process down with it.
    not_yet = ErrorMessage(KafkaError.UNKNOWN_TOPIC_OR_PART,
                           "Subscribed topic not available: lotlens.submissions")
    handled: list[str] = []
    consumer, _ = run([[not_yet], [ErrorMessage(KafkaError._TRANSPORT, "Connection refused")],
                       [FakeMessage(0, event(0))]],
                      lambda envelopes: handled.extend(e.job_id for e in envelopes))
    assert handled == ["job-0"]
    assert consumer.stored == [0]
    assert consumer.made == 1, "a client that recovers by itself was replaced"


def test_an_offset_of_a_partition_taken_away_meanwhile_is_left_to_its_new_owner_not_an_exit() -> None:
    # librdkafka refuses to store an offset of a partition no longer assigned (`_STATE`): a
    # rebalance served inside the `consume` that returned the message. It was re-raised: exit.
    class Revoked(FakeConsumer):
        def store_offsets(self, message: FakeMessage) -> None:
            if message.partition() == 1:
                raise KafkaException(KafkaError(KafkaError._STATE))
            super().store_offsets(message)

    stop, handled = threading.Event(), list[str]()
    consumer = Revoked([[FakeMessage(0, event(0), partition=1), FakeMessage(1, event(1))],
                        [FakeMessage(2, event(2))]], stop)
    spec = ConsumerSpec(group_id="g", topics=[TOPICS.submissions], handler=job_ids_into(handled))
    kafka.run_consumer(KafkaSettings(), TOPICS, spec, cast(EventProducer, FakeProducer()), stop,
                       make_consumer=consumer)  # type: ignore[arg-type]
    assert (handled, consumer.stored) == (["job-0", "job-1", "job-2"], [1, 2])
