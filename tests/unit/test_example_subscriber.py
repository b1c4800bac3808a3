"""The example subscriber (examples/subscriber) with messages as confluent-kafka hands them out:
what it does with an event version newer than it reads, with lot results before their job's end,
and with the consumer errors librdkafka hands out (the whole-stack run is
tests/e2e/test_example_subscriber.py)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message

from tests.example_subscriber import SUBSCRIBER


def _subscriber() -> ModuleType:
    spec = importlib.util.spec_from_file_location("subscriber", SUBSCRIBER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _event(kind: str, version: int, event_id: str, data: dict[str, Any], partition: int = 0) -> Message:
    envelope = {"event_id": event_id, "type": kind, "version": version,
                "occurred_at": "2026-03-01T12:00:00+00:00", "job_id": "job-1", "client_id": "c", "trace": {},
                "data": {"job_id": "job-1", **data}}
    return Message(topic="lotlens.translation", partition=partition, offset=7, key=b"job-1",
                   value=json.dumps(envelope).encode(), headers=[("type", kind.encode())])


def _translation(version: int, event_id: str, lot_id: str = "lot-1", partition: int = 0) -> Message:
    return _event("TranslationCompleted", version, event_id,
                  {"lot_id": lot_id, "descriptions": {"en": "<p>Dent.</p>"}}, partition)


def test_a_newer_version_of_a_type_it_reads_is_skipped_with_a_warning_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Skipped in silence, a release that moved TranslationCompleted to version 2 left the
    # subscriber's jobs without results, and nothing said why.
    subscriber = _subscriber()
    results = subscriber.Results(str(tmp_path / "results.sqlite3"))
    with caplog.at_level(logging.WARNING, logger="lotlens-subscriber"):
        subscriber.handle(results, _translation(2, "e-1"))
        subscriber.handle(results, _translation(2, "e-2"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "TranslationCompleted version 2" in warnings[0], warnings
    assert results._db.execute("SELECT count(*) FROM lot_results").fetchone() == (0,)
    subscriber.handle(results, _translation(1, "e-3"))
    stored = results._db.execute("SELECT lot_id, status FROM lot_results").fetchall()
    assert stored == [("lot-1", "completed")]


def test_a_lot_failed_at_translation_keeps_its_english_apart_and_an_older_failure_reads_as_before(
        tmp_path: Path) -> None:
    subscriber = _subscriber()
    results = subscriber.Results(str(tmp_path / "results.sqlite3"))
    subscriber.handle(results, _event("LotFailed", 1, "e-1", {
        "lot_id": "lot-1", "stage": "translation", "reason": "gave up",
        "descriptions": {"en": "<p>Dent.</p>"}}))
    subscriber.handle(results, _event("LotFailed", 1, "e-2", {"lot_id": "lot-2", "stage": "vision",
                                                              "reason": "no image"}))
    stored = results._db.execute("SELECT lot_id, status, descriptions, reason FROM lot_results "
                                 "ORDER BY lot_id").fetchall()
    # A failed lot's `descriptions` stay empty: a reader of them takes none for a finished lot's.
    assert stored == [("lot-1", "failed", None, "gave up"), ("lot-2", "failed", None, "no image")]
    kept = results._db.execute("SELECT lot_id, descriptions FROM partial_descriptions").fetchall()
    assert kept == [("lot-1", '{"en": "<p>Dent.</p>"}')]


def test_lot_results_read_after_their_jobs_end_still_report_the_job_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # After the topics grow (migrate, LOTLENS_TOPIC_PARTITIONS raised), a running job's later lot
    # results land on another partition than its earlier ones, so they come in any order, and its
    # JobCompleted (another topic) may come between them; nothing else of the job is read.
    subscriber = _subscriber()
    results = subscriber.Results(str(tmp_path / "results.sqlite3"))
    ended = {"status": "completed", "processed_lots": 1, "failed_lots": 1,
             "completed_at": "2026-03-01T12:05:00+00:00", "total_lots": 2}
    with caplog.at_level(logging.INFO, logger="lotlens-subscriber"):
        subscriber.handle(results, _translation(1, "e-1", "lot-1", partition=2))
        subscriber.handle(results, _event("JobCompleted", 1, "e-2", ended, partition=0))
        assert results._db.execute("SELECT reported FROM jobs").fetchall() == [(0,)]
        subscriber.handle(results, _event("LotFailed", 1, "e-3", {"lot_id": "lot-2", "reason": "no image"}))
    assert results._db.execute("SELECT reported FROM jobs").fetchall() == [(1,)]
    assert [r.getMessage() for r in caplog.records] == ["job job-1 completed: 2 lot results"]


def _stored(results: Any) -> list[tuple[str, str, str | None]]:
    lots = results._db.execute("SELECT lot_id, status, descriptions FROM lot_results ORDER BY lot_id")
    return [tuple(row) for row in lots.fetchall()]


def test_a_lot_settled_twice_keeps_the_first_result_as_lotlens_does(tmp_path: Path) -> None:
    # A retried batch's late answer after its LotFailed, or a failure after its
    # TranslationCompleted (docs/EVENT_LOG.md): LotLens keeps the first of the two in the topic's
    # order; the example kept the last, so a finished, paid lot read as failed downstream.
    subscriber = _subscriber()
    results = subscriber.Results(str(tmp_path / "results.sqlite3"))
    failure = {"stage": "translation", "reason": "gave up", "descriptions": {"en": "<p>Dent.</p>"}}
    subscriber.handle(results, _translation(1, "e-1", "lot-1"))
    subscriber.handle(results, _event("LotFailed", 1, "e-2", {"lot_id": "lot-1", **failure}))
    subscriber.handle(results, _event("LotFailed", 1, "e-3", {"lot_id": "lot-2", **failure}))
    subscriber.handle(results, _translation(1, "e-4", "lot-2"))
    assert _stored(results) == [("lot-1", "completed", '{"en": "<p>Dent.</p>"}'), ("lot-2", "failed", None)]
    kept = results._db.execute("SELECT lot_id FROM partial_descriptions").fetchall()
    assert kept == [("lot-2",)], "a completed lot's later failure left it in both tables"


def test_a_cancelled_jobs_late_results_are_kept_and_logged_as_late(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A job cancelled while its lots are in OpenAI batches is announced at once; the answers under
    # way come back after its JobCompleted. The example reported the job and stored them in silence.
    subscriber = _subscriber()
    results = subscriber.Results(str(tmp_path / "results.sqlite3"))
    cancelled = {"status": "cancelled", "processed_lots": 1, "failed_lots": 0,
                 "completed_at": "2026-03-01T12:05:00+00:00", "total_lots": 3}
    with caplog.at_level(logging.INFO, logger="lotlens-subscriber"):
        subscriber.handle(results, _translation(1, "e-1", "lot-1"))
        subscriber.handle(results, _event("JobCompleted", 1, "e-2", cancelled))
        subscriber.handle(results, _event("LotFailed", 1, "e-3", {
            "lot_id": "lot-2", "stage": "vision", "reason": "the job was cancelled"}))
    assert [lot for lot, *_ in _stored(results)] == ["lot-1", "lot-2"]
    assert [r.getMessage() for r in caplog.records] == [
        "job job-1 cancelled: 1 lot results", "a late result of job job-1 (reported cancelled): lot lot-2"]


@pytest.mark.parametrize("value", [
    {"event_id": "e-1", "type": ["TranslationCompleted"], "version": 1},
    {"event_id": "e-1", "type": "TranslationCompleted", "version": 1, "job_id": "job-1", "data": None},
    {"event_id": "e-1", "type": "LotFailed", "version": 1, "job_id": "job-1", "data": {"lot_id": "lot-1"}},
    {"type": "JobCompleted", "version": 1, "job_id": "job-1", "data": {}},
    {"event_id": "e-1", "type": "LotFailed", "version": 1, "job_id": "job-1",
     "data": {"lot_id": "lot-1", "reason": {"x": 1}}},
    {"event_id": ["e-1"], "type": "LotFailed", "version": 1, "job_id": "job-1",
     "data": {"lot_id": "lot-1", "reason": "no image"}},
    {"event_id": "e-1", "type": "LotFailed", "version": 1, "job_id": "job-1",
     "data": {"lot_id": None, "reason": "no image"}},
    {"event_id": "e-1", "type": "JobCompleted", "version": 1, "job_id": "job-1", "data": {
        "status": None, "processed_lots": 1, "failed_lots": 0, "completed_at": "2026-03-01T12:05:00+00:00"}},
    {"event_id": None, "type": "LotFailed", "version": 1, "job_id": "job-1",
     "data": {"lot_id": "lot-1", "reason": "no image"}},
], ids=["type not a string", "no data", "no reason", "no event id", "reason an object", "event id a list",
        "lot id null", "status null", "event id null"])
def test_a_message_unlike_its_schema_is_skipped_not_a_crash_loop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, value: dict[str, Any]) -> None:
    # It raised out of `handle`: the process exited before committing, read the message again at
    # its restart, and so on for good (a stray producer, or `dlq replay --force` of an undecodable
    # letter, puts such bytes on a public topic).
    subscriber = _subscriber()
    results = subscriber.Results(str(tmp_path / "results.sqlite3"))
    message = Message(topic="lotlens.translation", partition=0, offset=9, key=b"job-1",
                      value=json.dumps(value).encode())
    with caplog.at_level(logging.WARNING, logger="lotlens-subscriber"):
        subscriber.handle(results, message)
    assert any("offset 9" in r.getMessage() for r in caplog.records), caplog.records
    assert results._db.execute("SELECT count(*) FROM seen_events").fetchone() == (0,)
    subscriber.handle(results, _translation(1, "e-1"))  # the same event id, well formed: applied
    assert _stored(results) == [("lot-1", "completed", '{"en": "<p>Dent.</p>"}')]


class StubConsumer:
    """confluent_kafka.Consumer as the loop uses it: hands out the given batches, one per
    `consume`, then asks the loop to stop; counts commits and closes."""

    def __init__(self, batches: list[list[Message]], stopping: list[int],
                 refusals: list[KafkaError] | None = None) -> None:
        self.batches, self.stopping, self.refusals = batches, stopping, refusals or []
        self.commits = self.closes = 0
        self.uncommitted = False  # an event handed out since the last commit

    def __call__(self, _config: dict[str, Any]) -> StubConsumer:
        return self

    def subscribe(self, _topics: list[str]) -> None:
        """Nothing to subscribe to: the batches the test hands out are the topics."""

    def consume(self, _count: int, _timeout: float) -> list[Message]:
        if not self.batches:
            self.stopping.append(15)
            return []
        batch = self.batches.pop(0)
        self.uncommitted |= any(message.error() is None for message in batch)
        return batch

    def commit(self, asynchronous: bool) -> None:
        if not self.uncommitted:  # as the real client answers (checked against the broker)
            raise KafkaException(KafkaError(KafkaError._NO_OFFSET, "Commit failed: Local: No offset stored"))
        if self.refusals:  # what the group coordinator answers next
            raise KafkaException(self.refusals.pop(0))
        self.commits += 1
        self.uncommitted = False

    def close(self) -> None:
        self.closes += 1


def _error(error: KafkaError) -> Message:
    return Message(topic="lotlens.translation", partition=0, offset=-1, error=error)


def _run(subscriber: ModuleType, tmp_path: Path, consumer: StubConsumer, stopping: list[int],
         monkeypatch: pytest.MonkeyPatch) -> None:
    args = argparse.Namespace(bootstrap="127.0.0.1:1", group="acme", db=str(tmp_path / "results.sqlite3"),
                              instance_id=None, topics="lotlens.translation")
    monkeypatch.setattr(subscriber, "Consumer", consumer)
    subscriber.run(args, stopping)


def test_errors_librdkafka_retries_by_itself_are_logged_and_the_subscriber_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # It raised on the first one and exited: a copied subscriber crash-looped through every broker
    # restart, and one started before LotLens had created the topics never started at all.
    subscriber, stopping = _subscriber(), list[int]()
    consumer = StubConsumer([
        [_error(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "Subscribed topic not available"))],
        [_error(KafkaError(KafkaError._TRANSPORT, "Connection refused")), _translation(1, "e-1")],
    ], stopping)
    with caplog.at_level(logging.WARNING, logger="lotlens-subscriber"):
        _run(subscriber, tmp_path, consumer, stopping, monkeypatch)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "Subscribed topic not available" in warnings[0], warnings
    stored = subscriber.Results(str(tmp_path / "results.sqlite3"))._db.execute(
        "SELECT lot_id, status FROM lot_results").fetchall()
    assert stored == [("lot-1", "completed")]
    assert consumer.commits == 1 and consumer.closes == 1


@pytest.mark.parametrize("fatal", [
    KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer with same group.instance.id"),
    KafkaError(KafkaError._TRANSPORT, "the client failed for good", fatal=True)], ids=["code", "flag"])
def test_a_fatal_error_ends_the_subscriber(tmp_path: Path, fatal: KafkaError,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # A fatal error leaves the client unusable: exit, and let the supervisor start it again.
    subscriber, stopping = _subscriber(), list[int]()
    consumer = StubConsumer([[_error(fatal), _translation(1, "e-1")]], stopping)
    with pytest.raises(KafkaException):
        _run(subscriber, tmp_path, consumer, stopping, monkeypatch)
    assert consumer.closes == 1 and consumer.commits == 0


def test_a_commit_refused_by_a_rebalance_is_logged_and_the_subscriber_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # A commit that meets a rebalance (another instance joining or leaving the group) fails with
    # ILLEGAL_GENERATION or REBALANCE_IN_PROGRESS; the subscriber raised it and exited. Nothing
    # is lost by going on: the next commit covers those offsets, or the partition's next owner
    # reads the batch again and skips it by event id.
    subscriber, stopping = _subscriber(), list[int]()
    consumer = StubConsumer([[_translation(1, "e-1", "lot-1")], [_translation(1, "e-2", "lot-2")]], stopping,
                            refusals=[KafkaError(KafkaError.ILLEGAL_GENERATION, "Commit failed: Broker: "
                                                 "Specified group generation id is not valid")])
    with caplog.at_level(logging.WARNING, logger="lotlens-subscriber"):
        _run(subscriber, tmp_path, consumer, stopping, monkeypatch)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "generation id is not valid" in warnings[0], warnings
    stored = subscriber.Results(str(tmp_path / "results.sqlite3"))._db.execute(
        "SELECT lot_id FROM lot_results ORDER BY 1").fetchall()
    assert stored == [("lot-1",), ("lot-2",)] and consumer.commits == 1
