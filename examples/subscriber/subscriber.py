"""An example LotLens subscriber: collects each job's lot results and reports finished jobs.

Copy it and replace `Results` with your own storage. It depends only on confluent-kafka and the
standard library, and follows the contract in the LotLens README ("Subscribing to LotLens events"):

- its own consumer group; a new group starts from the first event on the topics (kept for good);
- at-least-once delivery made idempotent by the event id: the id is recorded in the same SQLite
  transaction as the event's effect, so a redelivered event changes nothing;
- the Kafka offset is committed only after that transaction, so a crash or restart redelivers
  instead of losing an event;
- unknown event types, versions and fields are ignored (a newer version of a type it reads is
  logged once: its events are missed until the subscriber is upgraded);
- no order across topics, nor within one once its partitions grow (a running job's later events
  then land on another partition): a job is reported once its `JobCompleted` and every lot result
  it counts are in, whichever came first;
- a lot's first result stands (a lot can settle twice, as LotLens's read models keep the first);
  a cancelled job's lots can settle after its `JobCompleted`: kept, and logged as late;
- a message unlike its type's schema is logged and skipped, not retried for good.

    python subscriber.py --bootstrap 127.0.0.1:19092 --group acme-lot-results --db results.sqlite3
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

log = logging.getLogger("lotlens-subscriber")

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_events (event_id TEXT PRIMARY KEY NOT NULL);
CREATE TABLE IF NOT EXISTS lot_results (
    job_id TEXT NOT NULL, lot_id TEXT NOT NULL, status TEXT NOT NULL, descriptions TEXT, reason TEXT,
    PRIMARY KEY (job_id, lot_id));
CREATE TABLE IF NOT EXISTS partial_descriptions (
    job_id TEXT NOT NULL, lot_id TEXT NOT NULL, descriptions TEXT NOT NULL, PRIMARY KEY (job_id, lot_id));
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, status TEXT NOT NULL, processed_lots INTEGER NOT NULL,
    failed_lots INTEGER NOT NULL, completed_at TEXT NOT NULL, reported INTEGER NOT NULL DEFAULT 0);
"""
# The event types and payload versions this subscriber understands; anything else is skipped.
UNDERSTOOD = {("TranslationCompleted", 1), ("LotFailed", 1), ("JobCompleted", 1)}
# The newer versions of those types already warned about (once each, not once per lot).
_SKIPPED_VERSIONS: set[tuple[str, int]] = set()


class Results:
    """The subscriber's own store (SQLite here): lot results, finished jobs, events already seen."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def apply(self, event: dict[str, Any]) -> bool:
        """Apply one event exactly once; False when it was seen before."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            seen = self._db.execute("INSERT INTO seen_events VALUES (?) ON CONFLICT DO NOTHING",
                                    (event["event_id"],))
            if seen.rowcount == 1:
                self._effect(event["type"], event["job_id"], event["data"])
            self._db.execute("COMMIT")
            return seen.rowcount == 1
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _effect(self, kind: str, job_id: str, data: dict[str, Any]) -> None:
        # A lot can settle twice (a retried batch's late answer after its LotFailed, or a failure
        # after its TranslationCompleted): LotLens keeps the first, and so does this (OR IGNORE).
        if kind == "TranslationCompleted":
            self._settle(job_id, data["lot_id"], "completed",
                         json.dumps(data["descriptions"], ensure_ascii=False), None)
        elif kind == "LotFailed" and self._settle(job_id, data["lot_id"], "failed", None, data["reason"]):
            # A lot failed at translation keeps its English and the languages translated before
            # (`descriptions`, absent from events of older releases): paid for, kept apart, so a
            # reader of `lot_results.descriptions` never takes a failed lot's for a finished one's.
            if kept := data.get("descriptions"):
                self._db.execute("INSERT OR REPLACE INTO partial_descriptions VALUES (?, ?, ?)",
                                 (job_id, data["lot_id"], json.dumps(kept, ensure_ascii=False)))
        elif kind == "JobCompleted":
            self._db.execute("INSERT INTO jobs (job_id, status, processed_lots, failed_lots, completed_at) "
                             "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", (job_id, data["status"],
                             data["processed_lots"], data["failed_lots"], data["completed_at"]))
        self._report_finished(job_id)

    def _settle(self, job_id: str, lot_id: str, status: str, descriptions: str | None,
                reason: str | None) -> bool:
        """Record a lot's result unless it has one; whether this one is kept."""
        kept = self._db.execute("INSERT INTO lot_results VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                                (job_id, lot_id, status, descriptions, reason)).rowcount == 1
        reported = self._db.execute("SELECT status FROM jobs WHERE job_id = ? AND reported = 1",
                                    (job_id,)).fetchone()
        if kept and reported:
            # A job cancelled while its lots were in OpenAI batches is announced at once; the
            # answers under way still come back, after its JobCompleted.
            log.info("a late result of job %s (reported %s): lot %s", job_id, reported[0], lot_id)
        return kept

    def _report_finished(self, job_id: str) -> None:
        row = self._db.execute(
            "SELECT j.status, j.processed_lots + j.failed_lots, count(r.lot_id) FROM jobs j "
            "LEFT JOIN lot_results r ON r.job_id = j.job_id WHERE j.job_id = ? AND j.reported = 0 "
            "GROUP BY j.job_id", (job_id,)).fetchone()
        if row and row[2] >= row[1]:
            self._db.execute("UPDATE jobs SET reported = 1 WHERE job_id = ?", (job_id,))
            log.info("job %s %s: %d lot results", job_id, row[0], row[2])


def handle(results: Results, message: Message) -> None:
    """One Kafka message: applied if it is an event this subscriber understands."""
    try:
        event = json.loads(message.value() or b"")
        kind = (event["type"], int(event["version"]))
        if not isinstance(kind[0], str):
            raise TypeError(kind[0])
    except (ValueError, KeyError, TypeError):
        log.warning("skipping a message that is not a LotLens event at offset %s", message.offset())
        return
    if kind not in UNDERSTOOD:
        if kind[0] in {name for name, _ in UNDERSTOOD} and kind not in _SKIPPED_VERSIONS:
            # A type this subscriber reads, in a newer version: LotLens writes only that version from
            # its release on, so these results are missed until the subscriber is upgraded.
            _SKIPPED_VERSIONS.add(kind)
            log.warning("skipping %s version %d (first at offset %s): newer than this subscriber reads; "
                        "upgrade it to that version's schema", kind[0], kind[1], message.offset())
        return
    try:
        applied = results.apply(event)
    except (KeyError, TypeError, sqlite3.Error) as missing:
        # Raised, it ended the process before its commit, and the restart read it again, for good;
        # a field of another JSON type, or null, is refused by SQLite (a column's type, NOT NULL).
        log.warning("skipping a %s event without what its schema requires (%r) at offset %s",
                    kind[0], missing, message.offset())
        return
    if not applied:
        log.info("skipping duplicate %s %s", event["type"], event["event_id"])


def is_fatal(error: KafkaError) -> bool:
    """Whether the client is unusable for good (librdkafka's fatal errors carry either mark)."""
    return bool(error.fatal()) or error.code() == KafkaError._FATAL


def is_event(message: Message) -> bool:
    """Whether a consumed message is an event; raises on an error that leaves the client unusable."""
    error = message.error()
    if error is None:
        return True
    if is_fatal(error):
        raise KafkaException(error)
    if error.code() != KafkaError._PARTITION_EOF:
        # librdkafka retries the rest by itself (a broker down for a moment, a topic LotLens has not
        # created yet): exiting over them turned every Kafka blip into a crash loop.
        log.warning("consumer: %s", error.str())
    return False


def commit(consumer: Consumer) -> None:
    """Commit the offsets of the events applied so far; raises only when the client is unusable."""
    # Only after `apply`: a crash before this line redelivers the batch, which `apply` then skips
    # event by event. One commit per batch, not per event.
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        error = exc.args[0]
        if is_fatal(error):
            raise
        # A rebalance under way (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS), a coordinator moving:
        # the next commit covers these offsets, or the partition's next owner reads them again and
        # `apply` skips them. Exiting would turn every instance joining the group into a crash.
        log.warning("offsets not committed (%s): they are committed with the next batch, or read "
                    "again", error.str())


def run(args: argparse.Namespace, stopping: list[int]) -> None:
    """Consume until `stopping` gets a signal."""
    results = Results(args.db)
    config = {"bootstrap.servers": args.bootstrap, "group.id": args.group,
              "auto.offset.reset": "earliest", "enable.auto.commit": False}
    if args.instance_id:
        # Static membership: restarted under the same name after a crash, it takes its partitions
        # back at once; without it they wait for the dead member's session to expire (45 s).
        config["group.instance.id"] = args.instance_id
    consumer = Consumer(config)
    consumer.subscribe(args.topics.split(","))
    log.info("subscribed to %s as group %s", args.topics, args.group)
    try:
        while not stopping:
            events = [message for message in consumer.consume(500, 0.5) if is_event(message)]
            for message in events:
                handle(results, message)
            if events:  # a batch of errors alone has no offset to commit: Kafka refuses (_NO_OFFSET)
                commit(consumer)
    finally:
        consumer.close()


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:19092", help="Kafka bootstrap servers")
    parser.add_argument("--group", default="acme-lot-results", help="this subscriber's own consumer group")
    parser.add_argument("--db", default="lot-results.sqlite3", help="where the results are kept")
    parser.add_argument("--instance-id", default=None,
                        help="this instance's stable name in the group (static membership; one per instance)")
    parser.add_argument("--topics", default="lotlens.vision,lotlens.translation,lotlens.completions",
                        help="comma-separated public topics (LotFailed, TranslationCompleted, JobCompleted)")
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run(parser.parse_args(), stopping)


if __name__ == "__main__":
    main()
